"""Orchestrator: the public gRPC API (auth, validation, composition of the mesh per request)."""

import asyncio

import structlog

from common.logging import configure_logging
from common.server import serve
from guardmesh.v1 import (
    check_service_pb2,
    check_service_pb2_grpc,
    completion_service_pb2,
    completion_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    readiness_service_pb2,
    readiness_service_pb2_grpc,
)
from orchestrator.auth import KeyStore, RateLimiter
from orchestrator.check_clients import FactualityClient, InjectionClient, PiiClient, ToxicityClient
from orchestrator.generation_client import GenerationClient
from orchestrator.input_checks import InputChecker
from orchestrator.output_checks import OutputChecker
from orchestrator.pipeline import CompletionPipeline
from orchestrator.servicer import CheckServicer, CompletionServicer, Gatekeeper, ModelServicer, ReadinessServicer
from orchestrator.settings import OrchestratorSettings

log = structlog.get_logger()


async def run(settings: OrchestratorSettings) -> None:
    keys = KeyStore.from_csv(settings.api_keys, settings.keys_file)
    if not len(keys) and settings.keys_file is None:
        raise SystemExit("no API keys configured: set GUARDMESH_API_KEYS or GUARDMESH_KEYS_FILE")
    gate = Gatekeeper(keys, RateLimiter(settings.rate_limit_per_minute))
    generation = GenerationClient(
        settings.generation_address, settings.model_name, idle_timeout_s=settings.generation_idle_timeout_s
    )
    pii = PiiClient(settings.pii_address)
    injection = InjectionClient(settings.injection_address)
    toxicity = ToxicityClient(settings.toxicity_address)
    factuality = FactualityClient(settings.factuality_address)
    checker = OutputChecker(
        toxicity,
        factuality,
        toxicity_threshold=settings.toxicity_threshold,
        factuality_threshold=settings.factuality_threshold,
    )
    pipeline = CompletionPipeline(
        generation,
        InputChecker(pii, injection, injection_threshold=settings.injection_threshold),
        checker,
        check_timeout_s=settings.check_timeout_s,
        speculate=settings.speculative_generation,
    )
    dependencies = {
        "generation": generation,
        "pii": pii,
        "injection": injection,
        "toxicity": toxicity,
        "factuality": factuality,
    }

    async def close() -> None:
        for client in dependencies.values():
            await client.close()

    servicers = [
        (
            completion_service_pb2_grpc.add_CompletionServiceServicer_to_server,
            CompletionServicer(settings, gate, pipeline),
        ),
        (model_service_pb2_grpc.add_ModelServiceServicer_to_server, ModelServicer(settings, gate)),
        (
            check_service_pb2_grpc.add_CheckServiceServicer_to_server,
            CheckServicer(settings, gate, pii, injection, toxicity, factuality),
        ),
        (readiness_service_pb2_grpc.add_ReadinessServiceServicer_to_server, ReadinessServicer(settings, dependencies)),
    ]
    names = [
        module.DESCRIPTOR.services_by_name[name].full_name
        for module, name in [
            (completion_service_pb2, "CompletionService"),
            (model_service_pb2, "ModelService"),
            (check_service_pb2, "CheckService"),
            (readiness_service_pb2, "ReadinessService"),
        ]
    ]
    await serve(
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
        register=[lambda server, add=add, s=s: add(s, server) for add, s in servicers],
        service_names=names,
        on_stop=close,
        # Streams may run for minutes; Envoy balances over orchestrator replicas itself.
        reconnect_every_s=None,
    )


def main() -> None:
    settings = OrchestratorSettings()
    configure_logging("orchestrator", settings.log_level)
    log.info("starting")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
