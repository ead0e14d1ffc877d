"""FactualityService over gRPC: maps protos to the scorer and errors to status codes."""

import asyncio
import time

import grpc
import structlog
from prometheus_client import Counter, Histogram

from common.batcher import MicroBatcher
from factuality.scorer import InvalidInput, Pair, check_pairs
from factuality.settings import FactualitySettings
from guardmesh.factuality.v1 import factuality_service_pb2 as pb
from guardmesh.factuality.v1 import factuality_service_pb2_grpc

log = structlog.get_logger()

REQUESTS = Counter("guardmesh_factuality_requests_total", "Score calls by outcome", ["outcome"])
LATENCY = Histogram(
    "guardmesh_factuality_request_seconds",
    "Score call latency",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCORES = Histogram(
    "guardmesh_factuality_score",
    "Factuality scores returned",
    buckets=tuple(i / 10 for i in range(1, 11)),
)
PAIRS = Histogram(
    "guardmesh_factuality_pairs_per_request",
    "Pairs per Score call",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


class FactualityServicer(factuality_service_pb2_grpc.FactualityServiceServicer):
    def __init__(self, settings: FactualitySettings):
        self._settings = settings
        # Set by warm-up once the model is loaded; health is NOT_SERVING until then.
        self.batcher: MicroBatcher[Pair, float] | None = None

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        started = time.perf_counter()
        pairs = [Pair(reference=p.reference, text=p.text) for p in request.pairs]
        if self.batcher is None:
            REQUESTS.labels("unavailable").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "embedding model is still loading")
        try:
            check_pairs(pairs, max_pairs=self._settings.max_pairs, max_chars=self._settings.max_text_chars)
            # A caller that gives up just drops its share of the batch (the batcher allows it).
            async with asyncio.timeout(context.time_remaining()):
                scores = await self.batcher.submit(pairs)
        except InvalidInput as e:
            REQUESTS.labels("invalid_argument").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except TimeoutError:
            REQUESTS.labels("deadline_exceeded").inc()
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "factuality scoring ran past the deadline")
        except Exception:
            REQUESTS.labels("error").inc()
            log.exception("factuality scoring failed", pairs=len(pairs))
            await context.abort(grpc.StatusCode.INTERNAL, "factuality scoring failed")
        elapsed = time.perf_counter() - started
        REQUESTS.labels("ok").inc()
        LATENCY.observe(elapsed)
        PAIRS.observe(len(pairs))
        for s in scores:
            SCORES.observe(s)
        log.debug("scored", pairs=len(pairs), ms=round(elapsed * 1000, 1))
        return pb.ScoreResponse(scores=scores)
