"""gRPC clients of the check services, with deadlines, retries and health for readiness.

Each check is its own deployment; a check that is down fails only the requests that
asked for it (503 `... unavailable`), never lets them through unchecked.
"""

import json

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from guardmesh.factuality.v1 import factuality_service_pb2, factuality_service_pb2_grpc
from guardmesh.injection.v1 import injection_service_pb2, injection_service_pb2_grpc
from guardmesh.pii.v1 import pii_service_pb2, pii_service_pb2_grpc
from guardmesh.toxicity.v1 import toxicity_service_pb2, toxicity_service_pb2_grpc


class CheckError(Exception):
    """A check could not run; `code` is the gRPC status to return."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# Checks are idempotent: retry a call that failed to reach a replica (a restarting or
# vanished peer), within the caller's deadline.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        "loadBalancingConfig": [{"round_robin": {}}],
    }
)


def check_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.max_reconnect_backoff_ms", 1_000),
        ],
    )


class CheckClient:
    """Common plumbing: one channel, error mapping, health."""

    name = "check"

    def __init__(self, address: str):
        self._channel = check_channel(address)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def is_ready(self, timeout_s: float) -> bool:
        try:
            response = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def _error(self, error: grpc.RpcError) -> CheckError:
        code = error.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return CheckError(code, f"{self.name} check timed out")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return CheckError(code, error.details() or f"invalid input for the {self.name} check")
        return CheckError(grpc.StatusCode.UNAVAILABLE, f"{self.name} check unavailable")

    async def _call(self, method, request, *, timeout_s: float, request_id: str):
        """One RPC with the deadline and request id, its failure mapped to a CheckError."""
        metadata = [("x-request-id", request_id)] if request_id else None
        try:
            return await method(request, timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as e:
            raise self._error(e) from None


PII_METHODS = {
    "random": pii_service_pb2.REPLACE_METHOD_RANDOM,
    "fake": pii_service_pb2.REPLACE_METHOD_FAKE,
    "category": pii_service_pb2.REPLACE_METHOD_CATEGORY,
    "mask": pii_service_pb2.REPLACE_METHOD_MASK,
}


class PiiClient(CheckClient):
    name = "pii"

    def __init__(self, address: str):
        super().__init__(address)
        self._stub = pii_service_pb2_grpc.PiiServiceStub(self._channel)

    async def analyze(
        self, texts: list[str], excluded: list[str], *, timeout_s: float, request_id: str = ""
    ) -> list[list[pii_service_pb2.Entity]]:
        """The PII entities found in each text (one batched call)."""
        request = pii_service_pb2.AnalyzeRequest(texts=texts, excluded_entities=excluded)
        response = await self._call(self._stub.Analyze, request, timeout_s=timeout_s, request_id=request_id)
        return [list(r.entities) for r in response.results]

    async def anonymize(
        self, texts: list[str], method: str, excluded: list[str], *, timeout_s: float, request_id: str = ""
    ) -> list[str]:
        """Each text with its PII replaced by `method` (random, fake, category, mask)."""
        request = pii_service_pb2.AnonymizeRequest(texts=texts, method=PII_METHODS[method], excluded_entities=excluded)
        response = await self._call(self._stub.Anonymize, request, timeout_s=timeout_s, request_id=request_id)
        return list(response.texts)


class InjectionClient(CheckClient):
    name = "injection"

    def __init__(self, address: str):
        super().__init__(address)
        self._stub = injection_service_pb2_grpc.InjectionServiceStub(self._channel)

    async def classify(self, texts: list[str], *, timeout_s: float, request_id: str = "") -> list[float]:
        """Probability in [0, 1] that each text is a prompt-injection attack."""
        request = injection_service_pb2.ClassifyRequest(texts=texts)
        response = await self._call(self._stub.Classify, request, timeout_s=timeout_s, request_id=request_id)
        return list(response.probabilities)


class ToxicityClient(CheckClient):
    name = "toxicity"

    def __init__(self, address: str):
        super().__init__(address)
        self._stub = toxicity_service_pb2_grpc.ToxicityServiceStub(self._channel)

    async def score(self, texts: list[str], *, timeout_s: float, request_id: str = "") -> list[float]:
        """Toxicity in [0, 1] per text (one batched call)."""
        request = toxicity_service_pb2.ScoreRequest(texts=texts)
        response = await self._call(self._stub.Score, request, timeout_s=timeout_s, request_id=request_id)
        return list(response.scores)


class FactualityClient(CheckClient):
    name = "factuality"

    def __init__(self, address: str):
        super().__init__(address)
        self._stub = factuality_service_pb2_grpc.FactualityServiceStub(self._channel)

    async def score(self, pairs: list[tuple[str, str]], *, timeout_s: float, request_id: str = "") -> list[float]:
        """Support in [0, 1] of each (reference, text) pair (one batched call)."""
        request = factuality_service_pb2.ScoreRequest(
            pairs=[factuality_service_pb2.Pair(reference=r, text=t) for r, t in pairs]
        )
        response = await self._call(self._stub.Score, request, timeout_s=timeout_s, request_id=request_id)
        return list(response.scores)
