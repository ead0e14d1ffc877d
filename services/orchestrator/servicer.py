"""gRPC servicers: map protos to the pipeline and pipeline errors to gRPC statuses."""

import asyncio
import contextlib
import math
import secrets
import time
import uuid

import grpc
import structlog
from google.api import httpbody_pb2

from guardmesh.v1 import (
    check_service_pb2,
    check_service_pb2_grpc,
    completion_service_pb2_grpc,
    model_service_pb2,
    model_service_pb2_grpc,
    readiness_service_pb2,
    readiness_service_pb2_grpc,
)
from guardmesh.v1 import (
    completion_service_pb2 as pb,
)
from orchestrator import responses
from orchestrator.auth import ApiKey, KeyStore, RateLimiter, bearer_token
from orchestrator.check_clients import (
    PII_METHODS,
    CheckClient,
    CheckError,
    FactualityClient,
    InjectionClient,
    PiiClient,
    ToxicityClient,
)
from orchestrator.generation_client import GenerationClient
from orchestrator.pipeline import CompletionPipeline, PipelineError, Usage
from orchestrator.settings import OrchestratorSettings
from orchestrator.validation import CompletionJob, InvalidRequest, validate

log = structlog.get_logger()

CAPABILITIES = ("completion", "chat-completion", "chat-with-image", "embedding", "embedding-with-image", "tokenize")


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


async def request_budget(context: grpc.aio.ServicerContext, settings: OrchestratorSettings) -> float:
    """Seconds this request may take: the smallest of the caller's gRPC deadline, its
    `x-request-timeout` header (seconds, REST callers) and the configured maximum."""
    budget = settings.request_timeout_s
    remaining = context.time_remaining()
    if remaining is not None:
        budget = min(budget, remaining)
    header = _metadata(context).get("x-request-timeout")
    if header is not None:
        try:
            asked = float(header)
        except ValueError:
            asked = float("nan")
        if not 0 < asked < float("inf"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "x-request-timeout must be a positive number of seconds"
            )
        budget = min(budget, asked)
    return budget


FORBIDDEN = "api understands the request but refuses to authorize it"


class Gatekeeper:
    """Who may call what, how often: 401 unknown key, 403 outside its scopes, 429 over its rate."""

    def __init__(self, keys: KeyStore, limiter: RateLimiter):
        self._keys = keys
        self._limiter = limiter

    async def authenticate(self, context: grpc.aio.ServicerContext, endpoint: str) -> ApiKey:
        token = bearer_token(_metadata(context).get("authorization"))
        if token is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing api key: send Authorization: Bearer <key>")
        key = self._keys.lookup(token)
        if key is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid api key")
        if not key.allows(endpoint):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, FORBIDDEN)
        return key

    async def admit(self, context: grpc.aio.ServicerContext, key: ApiKey, model: str | None = None) -> None:
        """Checks the model scope and takes one request from the key's rate limit."""
        if model is not None and not key.allows("completions", model):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, FORBIDDEN)
        wait = self._limiter.acquire(key)
        if wait:
            seconds = max(1, math.ceil(wait))
            context.set_trailing_metadata((("retry-after", str(seconds)),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"rate limit exceeded; retry in {seconds} s")

    async def check(self, context: grpc.aio.ServicerContext, endpoint: str) -> ApiKey:
        key = await self.authenticate(context, endpoint)
        await self.admit(context, key)
        return key


def _request_id(context: grpc.aio.ServicerContext) -> str:
    """The id the interceptor bound for this call (Envoy's x-request-id), carried to every hop."""
    return (
        structlog.contextvars.get_contextvars().get("request_id")
        or _metadata(context).get("x-request-id")
        or uuid.uuid4().hex
    )


class CompletionServicer(completion_service_pb2_grpc.CompletionServiceServicer):
    def __init__(self, settings: OrchestratorSettings, gate: Gatekeeper, pipeline: CompletionPipeline):
        self._settings = settings
        self._gate = gate
        self._pipeline = pipeline

    async def _admit(self, request: pb.CreateCompletionRequest, context) -> tuple[CompletionJob, str, float]:
        key = await self._gate.authenticate(context, "completions")
        try:
            job = validate(request, self._settings)
        except InvalidRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        await self._gate.admit(context, key, job.model)
        budget = await request_budget(context, self._settings)
        request_id = _request_id(context)
        log.info("completion", choices=len(job.prompts) * job.n, stream=job.stream, max_tokens=job.sampling.max_tokens)
        return job, request_id, budget

    async def _complete(
        self, job: CompletionJob, request_id: str, budget: float, context
    ) -> pb.CreateCompletionResponse:
        try:
            completion = await self._pipeline.complete(job, request_id=request_id, timeout_s=budget)
        except PipelineError as e:
            log.info("completion failed", code=e.code.name)
            await context.abort(e.code, e.message)
        return responses.completion_response(
            completion, id=responses.new_completion_id(), model=job.model, created=responses.now()
        )

    async def CreateCompletion(self, request, context):
        job, request_id, budget = await self._admit(request, context)
        return await self._complete(job, request_id, budget, context)

    # The streaming handlers write through `context.write` rather than being async
    # generators: when the caller goes away, gRPC cancels the handler's task, and a
    # generator suspended at `yield` (the write happens outside it) would stay open until
    # the garbage collector finds it, its generation running on for nobody. Here the
    # cancellation lands in our frame and `aclosing` ends the pipeline, and with it the
    # generation, at once.

    async def StreamCompletion(self, request, context):
        job, request_id, budget = await self._admit(request, context)
        ids = dict(id=responses.new_completion_id(), model=job.model, created=responses.now())
        usage = Usage()
        sent = False
        try:
            async with contextlib.aclosing(
                self._pipeline.stream(job, request_id=request_id, timeout_s=budget, usage=usage)
            ) as deltas:
                async for delta in deltas:
                    await context.write(responses.delta_chunk(delta, **ids))
                    sent = True
        except asyncio.CancelledError:
            log.info("client went away")
            raise
        except PipelineError as e:
            if not sent:
                await context.abort(e.code, e.message)
            await context.write(pb.CompletionChunk(error=e.message, **ids))
            return
        if job.include_usage:
            await context.write(responses.usage_chunk(usage, **ids))

    async def CreateCompletionHttp(self, request, context):
        job, request_id, budget = await self._admit(request, context)
        if not job.stream:
            response = await self._complete(job, request_id, budget, context)
            body = responses.to_json(response)
            await context.write(httpbody_pb2.HttpBody(content_type="application/json", data=body))
            return
        ids = dict(id=responses.new_completion_id(), model=job.model, created=responses.now())
        usage = Usage()
        sent = False

        def event(data: bytes) -> httpbody_pb2.HttpBody:
            return httpbody_pb2.HttpBody(content_type="text/event-stream", data=data)

        try:
            async with contextlib.aclosing(
                self._pipeline.stream(job, request_id=request_id, timeout_s=budget, usage=usage)
            ) as deltas:
                async for delta in deltas:
                    await context.write(event(responses.sse_event(responses.delta_chunk(delta, **ids))))
                    sent = True
        except asyncio.CancelledError:
            log.info("client went away")
            raise
        except PipelineError as e:
            if not sent:
                await context.abort(e.code, e.message)
            await context.write(event(responses.sse_error(e.message)))
            return
        if job.include_usage:
            await context.write(event(responses.sse_event(responses.usage_chunk(usage, **ids))))
        await context.write(event(responses.SSE_DONE))

    async def CheckCompletionAccess(self, request, context):
        await self._gate.authenticate(context, "completions")
        return pb.CheckCompletionAccessResponse(message="completions are available")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, settings: OrchestratorSettings, gate: Gatekeeper):
        self._settings = settings
        self._gate = gate
        self._started = int(time.time())

    async def ListModels(self, request, context):
        await self._gate.check(context, "models")
        capability = request.capability
        if capability and capability not in CAPABILITIES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown capability; use one of {', '.join(CAPABILITIES)}")
        models = []
        if capability in ("", "completion"):
            models.append(
                model_service_pb2.Model(
                    id=self._settings.model_name,
                    object="model",
                    created=self._started,
                    owned_by=self._settings.model_owner,
                    description="SmolLM2-135M-Instruct (Apache-2.0), int8 ONNX, served by Triton",
                    capabilities=["completion"],
                    max_context_length=self._settings.max_context_tokens,
                )
            )
        return model_service_pb2.ListModelsResponse(object="list", data=models)


class CheckServicer(check_service_pb2_grpc.CheckServiceServicer):
    """The standalone checks (`POST /toxicity`, ...), served by the same check services."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        gate: Gatekeeper,
        pii: PiiClient,
        injection: InjectionClient,
        toxicity: ToxicityClient,
        factuality: FactualityClient,
    ):
        self._settings = settings
        self._gate = gate
        self._pii = pii
        self._injection = injection
        self._toxicity = toxicity
        self._factuality = factuality

    def _budget(self, context) -> float:
        remaining = context.time_remaining()
        return min(self._settings.check_timeout_s, remaining if remaining is not None else float("inf"))

    async def CheckPii(self, request, context):
        await self._gate.check(context, "pii")
        if not request.prompt.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt is required")
        method = request.replace_method or "random"
        if method not in PII_METHODS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"replace_method must be one of {', '.join(PII_METHODS)}"
            )
        budget, request_id = self._budget(context), _request_id(context)
        excluded = list(request.entity_list)
        check = check_service_pb2.PiiCheck(index=0, status="success")
        try:
            if request.replace:
                [check.new_prompt] = await self._pii.anonymize(
                    [request.prompt], method, excluded, timeout_s=budget, request_id=request_id
                )
            else:
                [entities] = await self._pii.analyze(
                    [request.prompt], excluded, timeout_s=budget, request_id=request_id
                )
                check.pii_types_and_positions.extend(
                    check_service_pb2.PiiEntity(type=e.type, start=e.start, end=e.end, score=e.score) for e in entities
                )
        except CheckError as e:
            await context.abort(e.code, e.message)
        return check_service_pb2.CheckPiiResponse(
            id="pii-" + secrets.token_hex(12), object="pii_check", created=responses.now(), checks=[check]
        )

    async def CheckInjection(self, request, context):
        await self._gate.check(context, "injection")
        if not request.prompt.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt is required")
        try:
            [probability] = await self._injection.classify(
                [request.prompt], timeout_s=self._budget(context), request_id=_request_id(context)
            )
        except CheckError as e:
            await context.abort(e.code, e.message)
        return check_service_pb2.CheckInjectionResponse(
            id="inj-" + secrets.token_hex(12),
            object="injection_check",
            created=responses.now(),
            checks=[check_service_pb2.InjectionCheck(index=0, probability=probability, status="success")],
        )

    async def CheckToxicity(self, request, context):
        await self._gate.check(context, "toxicity")
        if not request.text.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text is required")
        try:
            [score] = await self._toxicity.score(
                [request.text], timeout_s=self._budget(context), request_id=_request_id(context)
            )
        except CheckError as e:
            await context.abort(e.code, e.message)
        return check_service_pb2.CheckToxicityResponse(
            id="toxi-" + secrets.token_hex(12),
            object="toxicity.check",
            created=responses.now(),
            checks=[check_service_pb2.ScoreCheck(index=0, score=score, status="success")],
        )

    async def CheckFactuality(self, request, context):
        await self._gate.check(context, "factuality")
        if not request.reference.strip() or not request.text.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "reference and text are required")
        try:
            [score] = await self._factuality.score(
                [(request.reference, request.text)], timeout_s=self._budget(context), request_id=_request_id(context)
            )
        except CheckError as e:
            await context.abort(e.code, e.message)
        return check_service_pb2.CheckFactualityResponse(
            id="fact-" + secrets.token_hex(12),
            object="factuality.check",
            created=responses.now(),
            checks=[check_service_pb2.ScoreCheck(index=0, score=score, status="success")],
        )


class ReadinessServicer(readiness_service_pb2_grpc.ReadinessServiceServicer):
    """`GET /readyz`: ready when every dependency answers its health check. Needs no key."""

    def __init__(self, settings: OrchestratorSettings, dependencies: dict[str, GenerationClient | CheckClient]):
        self._settings = settings
        self._dependencies = dependencies

    async def GetReadiness(self, request, context):
        timeout = self._settings.readiness_timeout_s
        checks = {name: client.is_ready(timeout) for name, client in self._dependencies.items()}
        results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
        states = {name: "SERVING" if ok else "NOT_SERVING" for name, ok in results.items()}
        not_ready = sorted(name for name, ok in results.items() if not ok)
        if not_ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"not ready: {', '.join(not_ready)}")
        return readiness_service_pb2.GetReadinessResponse(status="ready", services=states)
