"""Builds Prediction Guard / OpenAI shaped responses: protos for gRPC, JSON for REST."""

import json
import secrets
import time

from google.protobuf import json_format

from guardmesh.v1 import completion_service_pb2 as pb
from orchestrator.pipeline import ChoiceDelta, Completion, Usage

OBJECT = "text_completion"


def new_completion_id() -> str:
    return "cmpl-" + secrets.token_hex(12)


def now() -> int:
    return int(time.time())


def _usage(usage: Usage) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def completion_response(completion: Completion, *, id: str, model: str, created: int) -> pb.CreateCompletionResponse:
    return pb.CreateCompletionResponse(
        id=id,
        object=OBJECT,
        created=created,
        model=model,
        choices=[
            pb.CompletionChoice(index=c.index, text=c.text, finish_reason=c.finish_reason) for c in completion.choices
        ],
        usage=_usage(completion.usage),
    )


def delta_chunk(delta: ChoiceDelta, *, id: str, model: str, created: int) -> pb.CompletionChunk:
    return pb.CompletionChunk(
        id=id,
        object=OBJECT,
        created=created,
        model=model,
        choices=[pb.CompletionChoice(index=delta.index, text=delta.text, finish_reason=delta.finish_reason or "")],
    )


def usage_chunk(usage: Usage, *, id: str, model: str, created: int) -> pb.CompletionChunk:
    return pb.CompletionChunk(id=id, object=OBJECT, created=created, model=model, usage=_usage(usage))


def to_dict(message) -> dict:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def to_json(message) -> bytes:
    return json.dumps(to_dict(message), ensure_ascii=False).encode()


def sse_event(chunk: pb.CompletionChunk) -> bytes:
    """One server-sent event in the OpenAI chunk shape (null finish_reason/usage until set)."""
    data = to_dict(chunk)
    data.pop("error", None)
    for choice in data["choices"]:
        choice["finish_reason"] = choice["finish_reason"] or None
        choice["logprobs"] = None
    data["usage"] = data.get("usage")
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def sse_error(message: str) -> bytes:
    return b"data: " + json.dumps({"error": message}).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
