"""ToxicityService over gRPC: maps protos to the classifier and errors to status codes."""

import asyncio
import time

import grpc
import structlog
from prometheus_client import Counter, Histogram

from common.batcher import MicroBatcher
from guardmesh.toxicity.v1 import toxicity_service_pb2 as pb
from guardmesh.toxicity.v1 import toxicity_service_pb2_grpc
from toxicity.classifier import InvalidInput, check_texts
from toxicity.settings import ToxicitySettings

log = structlog.get_logger()

REQUESTS = Counter("guardmesh_toxicity_requests_total", "Score calls by outcome", ["outcome"])
LATENCY = Histogram(
    "guardmesh_toxicity_request_seconds",
    "Score call latency",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCORES = Histogram(
    "guardmesh_toxicity_score",
    "Toxicity scores returned",
    buckets=tuple(i / 10 for i in range(1, 11)),
)
TEXTS = Histogram("guardmesh_toxicity_texts_per_request", "Texts per Score call", buckets=(1, 2, 4, 8, 16, 32, 64))


class ToxicityServicer(toxicity_service_pb2_grpc.ToxicityServiceServicer):
    def __init__(self, settings: ToxicitySettings):
        self._settings = settings
        # Set by warm-up once the model is loaded; health is NOT_SERVING until then.
        self.batcher: MicroBatcher[str, float] | None = None

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        started = time.perf_counter()
        texts = list(request.texts)
        if self.batcher is None:
            REQUESTS.labels("unavailable").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "toxicity model is still loading")
        try:
            check_texts(texts, max_texts=self._settings.max_texts, max_chars=self._settings.max_text_chars)
            # A caller that gives up just drops its share of the batch (the batcher allows it).
            async with asyncio.timeout(context.time_remaining()):
                scores = await self.batcher.submit(texts)
        except InvalidInput as e:
            REQUESTS.labels("invalid_argument").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except TimeoutError:
            REQUESTS.labels("deadline_exceeded").inc()
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "toxicity scoring ran past the deadline")
        except Exception:
            REQUESTS.labels("error").inc()
            log.exception("toxicity scoring failed", texts=len(texts))
            await context.abort(grpc.StatusCode.INTERNAL, "toxicity scoring failed")
        elapsed = time.perf_counter() - started
        REQUESTS.labels("ok").inc()
        LATENCY.observe(elapsed)
        TEXTS.observe(len(texts))
        for s in scores:
            SCORES.observe(s)
        log.debug("scored", texts=len(texts), ms=round(elapsed * 1000, 1))
        return pb.ScoreResponse(scores=scores)
