"""The generation request as the orchestrator sends it: prompt text + JSON parameters.

Validated here too (the orchestrator validates first) because any Triton client
can call this service directly.
"""

import json
import secrets
from dataclasses import dataclass

from generation.scheduler import SamplingParams

MAX_STOPS = 4


class InvalidRequest(ValueError):
    """The request cannot be served as asked; the message says why (no prompt text in it)."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_tokens: int
    sampling: SamplingParams
    stop: list[str]
    # The caller's id for this request; the cancel model stops it by this id.
    request_id: str = ""


def _number(params: dict, name: str, default: float, low: float, high: float) -> float:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidRequest(f"{name} must be a number")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


def _integer(params: dict, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def parse_request(prompt: bytes, parameters: bytes, vocab_size: int) -> GenerationRequest:
    """Decodes and validates one request's tensors."""
    try:
        text = prompt.decode("utf-8")
        params = json.loads(parameters or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidRequest("prompt must be UTF-8 and parameters a JSON object") from None
    if not isinstance(params, dict):
        raise InvalidRequest("parameters must be a JSON object")
    bias_in = params.get("logit_bias") or {}
    if not isinstance(bias_in, dict):
        raise InvalidRequest("logit_bias must be an object of token id to bias")
    bias: dict[int, float] = {}
    for key, value in bias_in.items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise InvalidRequest(f"logit_bias key {str(key)[:20]!r} is not a token id") from None
        if not 0 <= token < vocab_size:
            raise InvalidRequest(f"logit_bias token id {token} is outside the vocabulary (0..{vocab_size - 1})")
        bias[token] = _number({"bias": value}, "bias", 0.0, -100.0, 100.0)
    stop = params.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > MAX_STOPS or not all(isinstance(s, str) and s for s in stop):
        raise InvalidRequest(f"stop must be a string or a list of at most {MAX_STOPS} non-empty strings")
    sampling = SamplingParams(
        temperature=_number(params, "temperature", 1.0, 0.0, 2.0),
        top_k=_integer(params, "top_k", 0, 0, vocab_size),
        top_p=_number(params, "top_p", 1.0, 0.0, 1.0),
        frequency_penalty=_number(params, "frequency_penalty", 0.0, -2.0, 2.0),
        presence_penalty=_number(params, "presence_penalty", 0.0, -2.0, 2.0),
        logit_bias=bias,
        # Unseeded requests draw a fresh seed, so they differ from each other.
        seed=_integer(params, "seed", secrets.randbits(64), -(1 << 63), (1 << 64) - 1),
    )
    if sampling.top_p == 0.0:
        raise InvalidRequest("top_p must be greater than 0")
    return GenerationRequest(
        prompt=text,
        max_tokens=_integer(params, "max_tokens", 100, 1, 1 << 20),
        sampling=sampling,
        stop=stop,
        request_id=str(params.get("request_id") or "")[:128],
    )
