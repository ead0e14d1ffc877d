"""Streams completions from the generation service over Triton's own gRPC protocol."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
import structlog
import tritonclient.grpc.aio as triton
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

log = structlog.get_logger()


@dataclass(frozen=True)
class Delta:
    """One streamed response of one choice."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "" until the last delta


class GenerationError(Exception):
    """The generation service refused or failed; `code` is the gRPC status to return."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


_CODES = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _bytes_input(name: str, value: bytes) -> InferInput:
    tensor = InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value], dtype=object))
    return tensor


CANCEL_MODEL = "generation_cancel"


class GenerationClient:
    """One shared channel to Triton; one bidirectional stream per choice."""

    def __init__(self, address: str, model_name: str, idle_timeout_s: float = 5.0):
        self._model = model_name
        self._idle_timeout_s = idle_timeout_s
        self._closing: set[asyncio.Task] = set()  # streams ending in the background (see stream())
        self._client = triton.InferenceServerClient(
            address,
            keepalive_options=triton.KeepAliveOptions(keepalive_time_ms=10_000, keepalive_timeout_ms=5_000),
        )

    async def close(self) -> None:
        await self._client.close()

    async def is_ready(self, timeout_s: float) -> bool:
        """Ready when both the model and its cancel model are loaded (cancellation needs both)."""
        try:
            for model in (self._model, CANCEL_MODEL):
                if not await self._client.is_model_ready(model, client_timeout=timeout_s):
                    return False
            return True
        except InferenceServerException:
            return False

    async def stream(self, prompt: str, parameters: dict, *, request_id: str, timeout_s: float) -> AsyncIterator[Delta]:
        """Yields deltas until the one with a finish_reason; raises GenerationError on failure.

        If the caller stops early (client gone, deadline, another choice failed), the
        generation is cancelled by request id so its batch slot frees at once.
        """
        parameters = {**parameters, "request_id": request_id}
        finished = False

        async def requests():
            yield {
                "model_name": self._model,
                "inputs": [
                    _bytes_input("prompt", prompt.encode()),
                    _bytes_input("parameters", json.dumps(parameters).encode()),
                ],
                "request_id": request_id,
            }

        responses = self._client.stream_infer(requests(), stream_timeout=timeout_s)
        try:
            while True:
                try:
                    # Generation sends a heartbeat at least every few seconds; silence
                    # means it died mid-stream (its Triton may linger while shutting down).
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                    # cancellation that races a response, and the generation runs on.
                    async with asyncio.timeout(self._idle_timeout_s):
                        result, error = await anext(responses)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise GenerationError(
                        grpc.StatusCode.UNAVAILABLE, "generation service unavailable (stopped responding)"
                    ) from None
                if error is not None:
                    raise _translate(error)
                finish = result.as_numpy("finish_reason")[0].decode()
                if finish == "error":
                    code, _, message = result.as_numpy("error")[0].decode().partition(": ")
                    raise GenerationError(_CODES.get(code, grpc.StatusCode.INTERNAL), message or "generation failed")
                yield Delta(
                    text=result.as_numpy("text")[0].decode(),
                    prompt_tokens=int(result.as_numpy("prompt_tokens")[0]),
                    completion_tokens=int(result.as_numpy("completion_tokens")[0]),
                    finish_reason=finish,
                )
                if finish:
                    finished = True
                    return
        except grpc.RpcError as e:  # the stream itself failed (connection, deadline)
            raise _translate_rpc(e) from None
        except InferenceServerException as e:
            raise _translate(e) from None
        finally:
            # The stream is left to end by itself, in the background: cancelling a gRPC
            # stream while Triton 2.51 (PyTriton 0.7.0's) is still answering it races its
            # cancellation handling and can crash the server with SIGSEGV (fixed upstream
            # in 24.12, triton-inference-server/server#7840, #8034). A generation we leave
            # early is stopped by request id instead, and then ends its stream normally.
            task = asyncio.create_task(self._close(responses, None if finished else request_id))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        raise GenerationError(grpc.StatusCode.UNAVAILABLE, "generation service ended the stream early")

    async def _close(self, responses, cancel_request_id: str | None) -> None:
        """Stops the generation (when asked) and reads its stream to the end; cancels the
        stream only if it does not end within the idle timeout (its server is gone)."""
        if cancel_request_id is not None:
            await self._cancel(cancel_request_id)
        try:
            async with asyncio.timeout(2 * self._idle_timeout_s):
                async for _ in responses:
                    pass
        except TimeoutError:
            responses.cancel()
        except (grpc.RpcError, InferenceServerException):
            pass  # the stream already failed: nothing left to close

    async def _cancel(self, request_id: str) -> None:
        try:
            await self._client.infer(
                CANCEL_MODEL, [_bytes_input("request_id", request_id.encode())], client_timeout=2.0
            )
        except (InferenceServerException, grpc.RpcError):
            pass  # the generation service is gone: nothing is left running there


def _translate_rpc(error: grpc.RpcError) -> GenerationError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return GenerationError(code, "generation timed out")
    if code == grpc.StatusCode.UNAVAILABLE:
        return GenerationError(code, "generation service unavailable")
    if code == grpc.StatusCode.CANCELLED:
        return GenerationError(code, "generation cancelled")
    return GenerationError(grpc.StatusCode.INTERNAL, "generation failed")


def _translate(error: InferenceServerException) -> GenerationError:
    """Errors Triton reports itself (model not loaded yet, server stopping, transport) mean
    the generation service cannot serve right now: 503, or 504 for a deadline."""
    status = str(error.status() or "")
    text = str(error.message() or error)
    if "DEADLINE_EXCEEDED" in status or "Deadline" in text:
        return GenerationError(grpc.StatusCode.DEADLINE_EXCEEDED, "generation timed out")
    log.info("generation unavailable", triton_status=status[:60])
    return GenerationError(grpc.StatusCode.UNAVAILABLE, "generation service unavailable")
