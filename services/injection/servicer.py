"""InjectionService over gRPC: protos <-> InjectionClassifier, InvalidInput -> INVALID_ARGUMENT."""

from __future__ import annotations

import time

import grpc
import structlog
from prometheus_client import Counter, Histogram

from guardmesh.injection.v1 import injection_service_pb2 as pb
from guardmesh.injection.v1 import injection_service_pb2_grpc
from injection.classifier import InjectionClassifier, InvalidInput

log = structlog.get_logger()

REQUESTS = Counter("guardmesh_injection_requests_total", "Injection RPCs by outcome", ["outcome"])
LATENCY = Histogram(
    "guardmesh_injection_request_seconds",
    "Injection RPC latency",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
FLAGGED = Counter("guardmesh_injection_flagged_total", "Texts scored at or above the threshold")
TEXTS = Counter("guardmesh_injection_texts_total", "Texts classified")


class InjectionServicer(injection_service_pb2_grpc.InjectionServiceServicer):
    def __init__(self, classifier: InjectionClassifier, threshold: float):
        self._classifier = classifier
        self._threshold = threshold

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        start = time.perf_counter()
        n = len(request.texts)
        try:
            probabilities = await self._classifier.classify(list(request.texts))
        except InvalidInput as e:
            self._done("invalid_argument", start, texts=n)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception:
            self._done("error", start, texts=n)
            log.exception("classify failed")
            await context.abort(grpc.StatusCode.INTERNAL, "injection classification failed")
        flagged = sum(p >= self._threshold for p in probabilities)
        TEXTS.inc(n)
        FLAGGED.inc(flagged)
        self._done("ok", start, texts=n, flagged=flagged)
        return pb.ClassifyResponse(probabilities=probabilities)

    @staticmethod
    def _done(outcome: str, start: float, **fields) -> None:
        """Metrics and one log line: counts and latency only (never prompt text)."""
        seconds = time.perf_counter() - start
        REQUESTS.labels(outcome).inc()
        LATENCY.observe(seconds)
        log.info("classify", outcome=outcome, ms=round(seconds * 1000, 2), **fields)
