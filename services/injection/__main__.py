"""Injection service: `python -m injection` (settings from INJECTION_* environment variables)."""

import asyncio
import time

import structlog

from common.logging import configure_logging
from common.server import serve
from guardmesh.injection.v1 import injection_service_pb2, injection_service_pb2_grpc
from injection.classifier import InjectionClassifier, ModelMissing, OnnxInjectionModel
from injection.servicer import InjectionServicer
from injection.settings import InjectionSettings

log = structlog.get_logger()


async def run(settings: InjectionSettings) -> None:
    model = OnnxInjectionModel(
        settings.model_dir,
        precision=settings.precision,
        intra_op_threads=settings.intra_op_threads,
        window_stride=settings.window_stride,
    )
    try:
        model.check_files()  # fail fast, before listening
    except ModelMissing as e:
        raise SystemExit(str(e)) from None
    classifier = InjectionClassifier(
        model,
        max_texts=settings.max_texts,
        max_text_chars=settings.max_text_chars,
        max_batch=settings.max_batch,
        max_wait_s=settings.max_wait_s,
    )

    async def warm_up() -> None:
        start = time.perf_counter()
        await asyncio.to_thread(model.load)  # health stays NOT_SERVING until this returns
        log.info(
            "model loaded",
            model_dir=str(settings.model_dir),
            precision=settings.precision,
            source=model.provenance.get("source", {}).get("package"),
            seconds=round(time.perf_counter() - start, 2),
        )

    async def on_stop() -> None:
        classifier.close()

    await serve(
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
        register=[
            lambda server: injection_service_pb2_grpc.add_InjectionServiceServicer_to_server(
                InjectionServicer(classifier, settings.threshold), server
            )
        ],
        service_names=[injection_service_pb2.DESCRIPTOR.services_by_name["InjectionService"].full_name],
        warm_up=warm_up,
        on_stop=on_stop,
    )


def main() -> None:
    settings = InjectionSettings()
    configure_logging("injection", settings.log_level)
    log.info("starting", port=settings.port, metrics_port=settings.metrics_port)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
