"""Factuality service: `python -m factuality` (settings from FACTUALITY_* environment variables)."""

import asyncio

import structlog

from common.batcher import MicroBatcher
from common.logging import configure_logging
from common.server import serve
from factuality.scorer import EmbeddingScorer, Pair, ScoringParams
from factuality.servicer import FactualityServicer
from factuality.settings import FactualitySettings
from guardmesh.factuality.v1 import factuality_service_pb2, factuality_service_pb2_grpc

log = structlog.get_logger()

SERVICE_NAME = factuality_service_pb2.DESCRIPTOR.services_by_name["FactualityService"].full_name


async def run(settings: FactualitySettings) -> None:
    servicer = FactualityServicer(settings)
    params = ScoringParams(
        sim_floor=settings.sim_floor,
        sim_full=settings.sim_full,
        fact_penalty=settings.fact_penalty,
        negation_penalty=settings.negation_penalty,
        min_weight=settings.min_weight,
    )

    async def warm_up() -> None:
        started = asyncio.get_running_loop().time()
        scorer = await asyncio.to_thread(
            EmbeddingScorer.load, device=settings.device, threads=settings.threads, params=params
        )
        await asyncio.to_thread(scorer.score, [Pair("Warm-up reference.", "Warm-up text.")])
        servicer.batcher = MicroBatcher("factuality", scorer.score, settings.max_batch, settings.max_wait_s)
        log.info("model loaded", seconds=round(asyncio.get_running_loop().time() - started, 2))

    async def on_stop() -> None:
        if servicer.batcher is not None:
            servicer.batcher.close()

    await serve(
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
        register=[lambda server: factuality_service_pb2_grpc.add_FactualityServiceServicer_to_server(servicer, server)],
        service_names=[SERVICE_NAME],
        warm_up=warm_up,
        on_stop=on_stop,
    )


def main() -> None:
    settings = FactualitySettings()
    configure_logging("factuality", settings.log_level)
    log.info("starting", port=settings.port, device=settings.device)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
