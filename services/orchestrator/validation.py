"""Turns a CreateCompletionRequest into a validated CompletionJob, or says exactly what is wrong.

Every out-of-range value is rejected (HTTP 400), never clamped. JSON `null`
arrives as an unset field and means "use the default".
"""

import math
from dataclasses import dataclass, field

from google.protobuf import struct_pb2

from guardmesh.v1 import completion_service_pb2 as pb
from orchestrator.settings import OrchestratorSettings

PII_MODES = ("block", "replace")
PII_METHODS = ("random", "fake", "category", "mask")
MAX_STOPS = 4
MAX_STOP_CHARS = 200


class InvalidRequest(ValueError):
    """A caller error; the message is returned to the caller as is."""


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters for one choice, as the generation service reads them."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    frequency_penalty: float
    presence_penalty: float
    logit_bias: dict[str, float]
    stop: tuple[str, ...]
    seed: int | None

    def as_parameters(self, seed: int | None) -> dict:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "logit_bias": self.logit_bias,
            "stop": list(self.stop),
            "seed": seed,
        }


@dataclass(frozen=True)
class InputChecks:
    pii: str = ""  # "", "block" or "replace"
    pii_replace_method: str = "random"
    entity_list: tuple[str, ...] = ()
    block_prompt_injection: bool = False


@dataclass(frozen=True)
class OutputChecks:
    toxicity: bool = False
    factuality: bool = False


@dataclass(frozen=True)
class CompletionJob:
    """Everything needed to serve one completion request."""

    model: str
    prompts: tuple[str, ...]
    n: int
    sampling: Sampling
    echo: bool
    stream: bool
    include_usage: bool
    input_checks: InputChecks = field(default_factory=InputChecks)
    output_checks: OutputChecks = field(default_factory=OutputChecks)


def _finite(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> float:
    if not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a finite number")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise InvalidRequest(f"{name} must be in {bracket}{low:g}, {high:g}], got {value:g}")
    return value


def _strings(name: str, value: struct_pb2.Value, *, max_items: int, max_chars: int | None = None) -> tuple[str, ...]:
    """Reads a Value holding a string or a list of strings."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        items = [value.string_value]
    elif kind == "list_value":
        items = []
        for item in value.list_value.values:
            if item.WhichOneof("kind") != "string_value":
                raise InvalidRequest(f"{name} must be a string or a list of strings")
            items.append(item.string_value)
    elif kind in (None, "null_value"):
        return ()
    else:
        raise InvalidRequest(f"{name} must be a string or a list of strings")
    if len(items) > max_items:
        raise InvalidRequest(f"{name} may hold at most {max_items} items, got {len(items)}")
    for item in items:
        if not item:
            raise InvalidRequest(f"{name} must not contain empty strings")
        if max_chars is not None and len(item) > max_chars:
            raise InvalidRequest(f"each {name} string may be at most {max_chars} characters")
    return tuple(items)


def validate(request: pb.CreateCompletionRequest, settings: OrchestratorSettings) -> CompletionJob:
    """Validates the whole request; raises InvalidRequest with the first problem found."""
    if not request.model:
        raise InvalidRequest("model is required")
    if request.model != settings.model_name:
        raise InvalidRequest(f"model {request.model[:100]!r} is not served; see GET /models")

    if not request.HasField("prompt") or request.prompt.WhichOneof("kind") in (None, "null_value"):
        raise InvalidRequest("prompt is required")
    prompts = _strings("prompt", request.prompt, max_items=settings.max_prompts)
    if not prompts:
        raise InvalidRequest("prompt must not be empty")

    n = request.n if request.HasField("n") else 1
    if not 1 <= n <= settings.max_n:
        raise InvalidRequest(f"n must be between 1 and {settings.max_n}, got {n}")
    if len(prompts) * n > settings.max_choices:
        raise InvalidRequest(f"prompts x n must be at most {settings.max_choices}, got {len(prompts)} x {n}")

    if request.HasField("max_tokens"):
        max_tokens = request.max_tokens
    elif request.HasField("max_completion_tokens"):
        max_tokens = request.max_completion_tokens
    else:
        max_tokens = settings.default_max_tokens
    if not 1 <= max_tokens <= settings.max_context_tokens:
        raise InvalidRequest(
            f"max_tokens must be between 1 and {settings.max_context_tokens} (the context window), got {max_tokens}"
        )

    if max_tokens * n * len(prompts) > settings.max_total_tokens:
        raise InvalidRequest(
            f"max_tokens x n x prompts must be at most {settings.max_total_tokens}, "
            f"got {max_tokens} x {n} x {len(prompts)} = {max_tokens * n * len(prompts)}"
        )

    def opt(name: str, default: float) -> float:
        return getattr(request, name) if request.HasField(name) else default

    temperature = _finite("temperature", opt("temperature", 1.0), 0.0, 2.0)
    top_p = _finite("top_p", opt("top_p", 1.0), 0.0, 1.0, low_open=True)
    top_k = request.top_k if request.HasField("top_k") else 0
    if top_k < 0:
        raise InvalidRequest(f"top_k must be 0 (off) or more, got {top_k}")
    frequency_penalty = _finite("frequency_penalty", opt("frequency_penalty", 0.0), -2.0, 2.0)
    presence_penalty = _finite("presence_penalty", opt("presence_penalty", 0.0), -2.0, 2.0)

    logit_bias: dict[str, float] = {}
    for key, bias in request.logit_bias.items():
        if not key.isdigit() or len(key) > 9:
            raise InvalidRequest(f"logit_bias keys must be token ids, got {key[:20]!r}")
        logit_bias[str(int(key))] = _finite(f"logit_bias[{key}]", bias, -100.0, 100.0)

    stop = _strings("stop", request.stop, max_items=MAX_STOPS, max_chars=MAX_STOP_CHARS)

    include_usage = False
    if request.HasField("stream_options"):
        if not request.stream:
            raise InvalidRequest("stream_options is only allowed when stream is true")
        include_usage = request.stream_options.include_usage

    checks = request.input
    if checks.pii and checks.pii not in PII_MODES:
        raise InvalidRequest(f"input.pii must be one of {', '.join(PII_MODES)}")
    method = checks.pii_replace_method or "random"
    if method not in PII_METHODS:
        raise InvalidRequest(f"input.pii_replace_method must be one of {', '.join(PII_METHODS)}")

    return CompletionJob(
        model=request.model,
        prompts=prompts,
        n=n,
        sampling=Sampling(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            logit_bias=logit_bias,
            stop=stop,
            seed=request.seed if request.HasField("seed") else None,
        ),
        echo=request.echo,
        stream=request.stream,
        include_usage=include_usage,
        input_checks=InputChecks(
            pii=checks.pii,
            pii_replace_method=method,
            entity_list=tuple(checks.entity_list),
            block_prompt_injection=checks.block_prompt_injection,
        ),
        output_checks=OutputChecks(toxicity=request.output.toxicity, factuality=request.output.factuality),
    )
