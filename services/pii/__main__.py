"""PII service: `python -m pii` (settings from PII_* environment variables).

The package `__init__` has already set TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="" (no network) by
the time this runs; presidio and spaCy are imported and loaded only in `run()` / warm-up.
"""

import asyncio
import logging
import time

import structlog

from common.logging import configure_logging
from common.server import serve
from guardmesh.pii.v1 import pii_service_pb2, pii_service_pb2_grpc
from pii.settings import PiiSettings

log = structlog.get_logger()


async def run(settings: PiiSettings) -> None:
    from faker import Faker

    from pii.engine import PiiEngine, PresidioAnalyzer
    from pii.servicer import PiiServicer

    analyzer = PresidioAnalyzer(
        spacy_model=settings.spacy_model,
        score_threshold=settings.score_threshold,
        entities=settings.entity_list(),
    )
    engine = PiiEngine(
        analyzer,
        max_texts=settings.max_texts,
        max_text_chars=settings.max_text_chars,
        max_batch=settings.max_batch,
        max_wait_s=settings.max_wait_s,
        faker=Faker("en_US"),
    )

    async def warm_up() -> None:
        start = time.perf_counter()
        await asyncio.to_thread(analyzer.load)  # health stays NOT_SERVING until this returns
        log.info(
            "model loaded",
            spacy_model=settings.spacy_model,
            entities=sorted(analyzer.entities),
            seconds=round(time.perf_counter() - start, 2),
        )

    async def on_stop() -> None:
        engine.close()

    await serve(
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
        register=[lambda server: pii_service_pb2_grpc.add_PiiServiceServicer_to_server(PiiServicer(engine), server)],
        service_names=[pii_service_pb2.DESCRIPTOR.services_by_name["PiiService"].full_name],
        warm_up=warm_up,
        on_stop=on_stop,
    )


def main() -> None:
    settings = PiiSettings()
    configure_logging("pii", settings.log_level)
    for name in ("presidio-analyzer", "presidio-anonymizer"):  # chatty plain-text INFO lines
        logging.getLogger(name).setLevel(logging.WARNING)
    log.info("starting", port=settings.port, metrics_port=settings.metrics_port)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
