"""PiiService over gRPC: maps protos to PiiEngine calls and InvalidInput to INVALID_ARGUMENT."""

from __future__ import annotations

import time
from collections import Counter as Tally

import grpc
import structlog
from prometheus_client import Counter, Histogram

from guardmesh.pii.v1 import pii_service_pb2 as pb
from guardmesh.pii.v1 import pii_service_pb2_grpc
from pii.engine import PiiEngine
from pii.replace import Method
from pii.spans import InvalidInput, Span

log = structlog.get_logger()

REQUESTS = Counter("guardmesh_pii_requests_total", "PII RPCs by outcome", ["method", "outcome"])
LATENCY = Histogram(
    "guardmesh_pii_request_seconds",
    "PII RPC latency",
    ["method"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
ENTITIES = Counter("guardmesh_pii_entities_total", "Detected entities by type", ["type"])

METHODS = {
    pb.REPLACE_METHOD_UNSPECIFIED: Method.RANDOM,
    pb.REPLACE_METHOD_RANDOM: Method.RANDOM,
    pb.REPLACE_METHOD_FAKE: Method.FAKE,
    pb.REPLACE_METHOD_CATEGORY: Method.CATEGORY,
    pb.REPLACE_METHOD_MASK: Method.MASK,
}


def _results(found: list[list[Span]]) -> list[pb.TextEntities]:
    return [
        pb.TextEntities(entities=[pb.Entity(type=s.type, start=s.start, end=s.end, score=s.score) for s in spans])
        for spans in found
    ]


def _types(found: list[list[Span]]) -> dict[str, int]:
    return dict(Tally(s.type for spans in found for s in spans))


class PiiServicer(pii_service_pb2_grpc.PiiServiceServicer):
    def __init__(self, engine: PiiEngine):
        self._engine = engine

    async def Analyze(self, request: pb.AnalyzeRequest, context: grpc.aio.ServicerContext) -> pb.AnalyzeResponse:
        start = time.perf_counter()
        try:
            found = await self._engine.analyze(list(request.texts), list(request.excluded_entities))
        except InvalidInput as e:
            self._done("analyze", "invalid_argument", start, texts=len(request.texts))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception:
            self._done("analyze", "error", start, texts=len(request.texts))
            log.exception("analyze failed")
            await context.abort(grpc.StatusCode.INTERNAL, "pii analysis failed")
        self._done("analyze", "ok", start, texts=len(request.texts), found=found)
        return pb.AnalyzeResponse(results=_results(found))

    async def Anonymize(self, request: pb.AnonymizeRequest, context: grpc.aio.ServicerContext) -> pb.AnonymizeResponse:
        start = time.perf_counter()
        method = METHODS.get(request.method)
        try:
            if method is None:
                raise InvalidInput(f"unknown replace method: {request.method}")
            texts, found = await self._engine.anonymize(list(request.texts), method, list(request.excluded_entities))
        except InvalidInput as e:
            self._done("anonymize", "invalid_argument", start, texts=len(request.texts))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception:
            self._done("anonymize", "error", start, texts=len(request.texts))
            log.exception("anonymize failed")
            await context.abort(grpc.StatusCode.INTERNAL, "pii anonymization failed")
        self._done("anonymize", "ok", start, texts=len(request.texts), found=found, replace=method.value)
        return pb.AnonymizeResponse(texts=texts, results=_results(found))

    @staticmethod
    def _done(method: str, outcome: str, start: float, *, texts: int, found=None, **extra) -> None:
        """Metrics and one log line: counts, types and latency only (never text or values)."""
        seconds = time.perf_counter() - start
        REQUESTS.labels(method, outcome).inc()
        LATENCY.labels(method).observe(seconds)
        types = _types(found) if found is not None else {}
        for t, n in types.items():
            ENTITIES.labels(t).inc(n)
        log.info(
            method,
            outcome=outcome,
            texts=texts,
            entities=sum(types.values()),
            types=types,
            ms=round(seconds * 1000, 2),
            **extra,
        )
