"""The Triton-facing model: a decoupled (streaming) PyTriton infer function.

Each request is one prompt; responses stream text deltas. The infer function is
an async generator, so PyTriton runs every stream concurrently on one event loop
while the scheduler thread batches their tokens. Deltas that pile up while a
response is being sent are coalesced into the next one, and under load a stream
answers at most every `coalesce_s`.
"""

import asyncio
import json
import math

import numpy as np
import structlog
from pytriton.model_config import Tensor

from generation.request import InvalidRequest, parse_request
from generation.scheduler import Overloaded, Scheduler, Sequence
from generation.stops import StopMatcher
from generation.tokenizer import Tokenizer

log = structlog.get_logger()

INPUTS = [
    Tensor(name="prompt", dtype=bytes, shape=(1,)),  # UTF-8 prompt text
    Tensor(name="parameters", dtype=bytes, shape=(1,)),  # JSON sampling parameters
]
OUTPUTS = [
    Tensor(name="text", dtype=bytes, shape=(1,)),  # new text since the previous response
    Tensor(name="prompt_tokens", dtype=np.int32, shape=(1,)),
    Tensor(name="completion_tokens", dtype=np.int32, shape=(1,)),  # generated so far
    Tensor(name="finish_reason", dtype=bytes, shape=(1,)),  # "", "stop", "length" or "error"
    Tensor(name="error", dtype=bytes, shape=(1,)),  # "CODE: message" when finish_reason is "error"
]


def _response(text: str, prompt_tokens: int, completion_tokens: int, finish: str = "", error: str = "") -> dict:
    return {
        "text": np.array([text.encode()], dtype=object),
        "prompt_tokens": np.array([prompt_tokens], dtype=np.int32),
        "completion_tokens": np.array([completion_tokens], dtype=np.int32),
        "finish_reason": np.array([finish.encode()], dtype=object),
        "error": np.array([error.encode()], dtype=object),
    }


class CompletionModel:
    """Streams one completion per request from the shared scheduler."""

    def __init__(
        self,
        scheduler: Scheduler,
        tokenizer: Tokenizer,
        max_len: int,
        vocab_size: int,
        heartbeat_s: float = 1.0,
        coalesce_s: float = 0.0,
        coalesce_above: int = 0,
    ):
        self._heartbeat_s = heartbeat_s
        self._coalesce_s = coalesce_s
        self._coalesce_above = coalesce_above
        self._scheduler = scheduler
        self._tokenizer = tokenizer
        self._max_len = max_len
        self._vocab_size = vocab_size
        # Running sequences by the caller's request id. Stock PyTriton never tells an infer
        # function that its client went away, so clients cancel through CancelModel.
        self.running: dict[str, Sequence] = {}

    def cancel(self, request_id: str) -> bool:
        seq = self.running.get(request_id)
        log.info("cancel", request_id=request_id, running=seq is not None)
        if seq is None:
            return False
        self._scheduler.cancel(seq)
        return True

    async def __call__(self, requests):
        # ModelConfig(batching=False, decoupled=True): exactly one request per call.
        for request in requests:
            async for response in self._generate(request):
                yield [response]

    async def _generate(self, request):
        try:
            req = parse_request(request["prompt"][0], request["parameters"][0], self._vocab_size)
        except InvalidRequest as e:
            yield _response("", 0, 0, "error", f"INVALID_ARGUMENT: {e}")
            return
        prompt_ids = self._tokenizer.encode(req.prompt)
        n_prompt = len(prompt_ids)
        if n_prompt == 0:
            yield _response("", 0, 0, "error", "INVALID_ARGUMENT: prompt has no tokens")
            return
        if n_prompt + req.max_tokens > self._max_len:
            yield _response(
                "",
                n_prompt,
                0,
                "error",
                f"INVALID_ARGUMENT: this model's maximum context length is {self._max_len} tokens, "
                f"however you requested {n_prompt + req.max_tokens} tokens "
                f"({n_prompt} in the prompt, {req.max_tokens} for the completion)",
            )
            return

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int | None, str | None]] = asyncio.Queue()

        def sink(token: int | None, finish: str | None) -> None:  # scheduler thread
            loop.call_soon_threadsafe(events.put_nowait, (token, finish))

        try:
            seq = self._scheduler.submit(prompt_ids, req.max_tokens, req.sampling, sink)
        except Overloaded as e:
            yield _response("", n_prompt, 0, "error", f"UNAVAILABLE: {e}")
            return

        if req.request_id:
            self.running[req.request_id] = seq
        detok = self._tokenizer.detokenizer(prompt_ids)
        stops = StopMatcher(req.stop)
        generated = 0
        finish = ""
        sent_at = -math.inf
        try:
            while not finish:
                try:
                    async with asyncio.timeout(self._heartbeat_s):
                        batch = [await events.get()]
                except TimeoutError:
                    # Still waiting (queued, or a long prefill): an empty response tells the
                    # client this stream is alive, so it can time out streams that are not.
                    yield _response("", n_prompt, generated)
                    continue
                # Under load, a stream answers at most every `coalesce_s` (its first token
                # at once): each response costs CPU in PyTriton, Triton, the orchestrator
                # and Envoy that the decode steps of every stream need on a small machine.
                hold = sent_at + self._coalesce_s - loop.time()
                if hold > 0 and self._scheduler.active > self._coalesce_above:
                    await asyncio.sleep(hold)
                while not events.empty():
                    batch.append(events.get_nowait())
                text = ""
                for token, reason in batch:
                    if token is not None and not finish:
                        generated += 1
                        out, stopped = stops.feed(detok.add(token))
                        text += out
                        if stopped:
                            finish = "stop"
                            self._scheduler.cancel(seq)
                    if reason is not None and not finish:
                        out, stopped = stops.feed(detok.finish())
                        text += out if stopped else out + stops.flush()
                        finish = "stop" if stopped else reason
                if finish in ("cancelled", "error"):
                    yield _response(text, n_prompt, generated, "error", "INTERNAL: generation failed")
                    return
                sent_at = loop.time()
                yield _response(text, n_prompt, generated, finish)
        finally:
            # The client went away (generator closed) or we stopped at a stop string:
            # free the slot before the next decode step (a no-op once finished).
            self._scheduler.cancel(seq)
            if self.running.get(req.request_id) is seq:
                del self.running[req.request_id]


CANCEL_MODEL = "generation_cancel"
CANCEL_INPUTS = [Tensor(name="request_id", dtype=bytes, shape=(1,))]
CANCEL_OUTPUTS = [Tensor(name="cancelled", dtype=np.bool_, shape=(1,))]


class CancelModel:
    """Stops a running completion by the request id its client sent (unknown ids are a no-op)."""

    def __init__(self, completions: CompletionModel):
        self._completions = completions

    async def __call__(self, requests):
        responses = []
        for request in requests:
            request_id = request["request_id"][0].decode("utf-8", "replace")
            responses.append({"cancelled": np.array([self._completions.cancel(request_id)])})
        return responses


def parameters_json(**params) -> bytes:
    """Encodes sampling parameters the way this model reads them (used by clients and tests)."""
    return json.dumps({k: v for k, v in params.items() if v is not None}).encode()
