"""Toxicity service: `python -m toxicity` (settings from TOXICITY_* environment variables)."""

import asyncio

import structlog

from common.batcher import MicroBatcher
from common.logging import configure_logging
from common.server import serve
from guardmesh.toxicity.v1 import toxicity_service_pb2, toxicity_service_pb2_grpc
from toxicity.classifier import CombinedClassifier
from toxicity.servicer import ToxicityServicer
from toxicity.settings import ToxicitySettings

log = structlog.get_logger()

SERVICE_NAME = toxicity_service_pb2.DESCRIPTOR.services_by_name["ToxicityService"].full_name


async def run(settings: ToxicitySettings) -> None:
    servicer = ToxicityServicer(settings)

    async def warm_up() -> None:
        started = asyncio.get_running_loop().time()
        classifier = await asyncio.to_thread(
            CombinedClassifier.load,
            settings.model_dir,
            device=settings.device,
            threads=settings.threads,
            chunk_chars=settings.chunk_chars,
        )
        await asyncio.to_thread(classifier.score, ["warm-up"])
        servicer.batcher = MicroBatcher("toxicity", classifier.score, settings.max_batch, settings.max_wait_s)
        log.info("model loaded", seconds=round(asyncio.get_running_loop().time() - started, 2))

    async def on_stop() -> None:
        if servicer.batcher is not None:
            servicer.batcher.close()

    await serve(
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
        register=[lambda server: toxicity_service_pb2_grpc.add_ToxicityServiceServicer_to_server(servicer, server)],
        service_names=[SERVICE_NAME],
        warm_up=warm_up,
        on_stop=on_stop,
    )


def main() -> None:
    settings = ToxicitySettings()
    configure_logging("toxicity", settings.log_level)
    log.info("starting", port=settings.port, device=settings.device)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
