"""One completion request, in the order it happens: input checks → generation → output checks.

Every choice (prompt × n) is generated concurrently; the generation service
batches them with everything else it is running.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from orchestrator.generation_client import Delta, GenerationClient, GenerationError
from orchestrator.validation import CompletionJob

_GOLDEN = 0x9E3779B97F4A7C15


class PipelineError(Exception):
    """Ends a request with a gRPC status and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ChoiceDelta:
    """New text of one choice; `finish_reason` is set on its last delta."""

    index: int
    text: str
    finish_reason: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Choice:
    index: int
    text: str = ""
    finish_reason: str = ""


@dataclass
class Completion:
    choices: list[Choice] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


def choice_seed(seed: int | None, index: int) -> int | None:
    """Gives each choice its own seed, derived from the request's (None = random)."""
    if seed is None:
        return None
    return (seed + index * _GOLDEN) % (1 << 64)


class CompletionPipeline:
    def __init__(self, generation: GenerationClient):
        self._generation = generation

    async def stream(
        self, job: CompletionJob, *, request_id: str, timeout_s: float, usage: Usage
    ) -> AsyncIterator[ChoiceDelta]:
        """Yields deltas of all choices as they arrive, filling `usage` as it goes."""
        self._check_inputs_supported(job)
        queue: asyncio.Queue[tuple[int, Delta | Exception | None]] = asyncio.Queue()
        choices = [(p, j) for p in range(len(job.prompts)) for j in range(job.n)]

        async def run(index: int, prompt_index: int) -> None:
            params = job.sampling.as_parameters(choice_seed(job.sampling.seed, index))
            try:
                async for delta in self._generation.stream(
                    job.prompts[prompt_index], params, request_id=f"{request_id}-{index}", timeout_s=timeout_s
                ):
                    if delta.text or delta.finish_reason:  # skip heartbeats
                        await queue.put((index, delta))
            except Exception as e:  # handed to the consumer, which decides the status
                await queue.put((index, e))
            else:
                await queue.put((index, None))

        tasks = [asyncio.create_task(run(i, p)) for i, (p, _) in enumerate(choices)]
        try:
            pending = len(tasks)
            started: set[int] = set()
            last: dict[int, Delta] = {}
            while pending:
                index, item = await queue.get()
                if item is None:
                    pending -= 1
                    continue
                if isinstance(item, GenerationError):
                    raise PipelineError(item.code, item.message)
                if isinstance(item, Exception):
                    raise PipelineError(grpc.StatusCode.INTERNAL, "generation failed") from item
                text = item.text
                if job.echo and index not in started:
                    text = job.prompts[choices[index][0]] + text
                started.add(index)
                last[index] = item
                yield ChoiceDelta(index, text, item.finish_reason or None)
            # Each prompt's tokens count once, however many samples it has.
            usage.prompt_tokens = sum(last[i].prompt_tokens for i, (_, j) in enumerate(choices) if j == 0)
            usage.completion_tokens = sum(d.completion_tokens for d in last.values())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def complete(self, job: CompletionJob, *, request_id: str, timeout_s: float) -> Completion:
        """Runs the whole request and returns every choice at once."""
        completion = Completion(choices=[Choice(i) for i in range(len(job.prompts) * job.n)])
        async for delta in self.stream(job, request_id=request_id, timeout_s=timeout_s, usage=completion.usage):
            choice = completion.choices[delta.index]
            choice.text += delta.text
            if delta.finish_reason:
                choice.finish_reason = delta.finish_reason
        return completion

    @staticmethod
    def _check_inputs_supported(job: CompletionJob) -> None:
        # The check services are separate deployments; until they are wired in, a request
        # that asks for a check is refused rather than answered unchecked.
        if job.input_checks.pii:
            raise PipelineError(grpc.StatusCode.UNAVAILABLE, "pii check unavailable")
        if job.input_checks.block_prompt_injection:
            raise PipelineError(grpc.StatusCode.UNAVAILABLE, "injection check unavailable")
        if job.output_checks.toxicity:
            raise PipelineError(grpc.StatusCode.UNAVAILABLE, "toxicity check unavailable")
        if job.output_checks.factuality:
            raise PipelineError(grpc.StatusCode.UNAVAILABLE, "factuality check unavailable")
