"""One completion request, in the order it happens: input checks → generation → output checks.

Every choice (prompt × n) is generated concurrently; the generation service
batches them with everything else it is running.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from prometheus_client import Counter

from orchestrator.check_clients import CheckError
from orchestrator.generation_client import Delta, GenerationClient, GenerationError
from orchestrator.input_checks import InputChecker, InputCheckFailed
from orchestrator.output_checks import OutputChecker, OutputCheckFailed, split_releasable
from orchestrator.validation import CompletionJob

_GOLDEN = 0x9E3779B97F4A7C15

CHECKS = Counter(
    "guardmesh_check_outcomes_total",
    "Input and output checks asked for in /completions, by outcome (passed, refused, unavailable, timeout)",
    ["stage", "outcome"],
)


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
    # The echoed prompt at the start of `text` (first delta of a choice with `echo`), which
    # output checks skip.
    echoed: str = ""


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


def _failure(error: CheckError) -> str:
    return "timeout" if error.code == grpc.StatusCode.DEADLINE_EXCEEDED else "unavailable"


class Budget:
    """A request's deadline, split across its hops: each hop gets what is left."""

    def __init__(self, seconds: float, check_cap_s: float):
        self._deadline = time.monotonic() + seconds
        self._check_cap_s = check_cap_s

    def remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise PipelineError(grpc.StatusCode.DEADLINE_EXCEEDED, "request deadline exceeded")
        return left

    def for_check(self) -> float:
        return min(self.remaining(), self._check_cap_s)


class CompletionPipeline:
    def __init__(
        self,
        generation: GenerationClient,
        input_checker: InputChecker,
        output_checker: OutputChecker,
        check_timeout_s: float = 5.0,
        speculate: bool = False,
    ):
        self._check_timeout_s = check_timeout_s
        self._speculate = speculate
        self._generation = generation
        self._input = input_checker
        self._output = output_checker

    async def stream(
        self, job: CompletionJob, *, request_id: str, timeout_s: float, usage: Usage
    ) -> AsyncIterator[ChoiceDelta]:
        """Yields deltas of all choices as they arrive, filling `usage` as it goes.

        With output checks, text is held per choice until a sentence ends, checked, and
        only then released; a failed check ends the stream with an error.
        """
        budget = Budget(timeout_s, self._check_timeout_s)
        # aclosing: whatever ends this stream (the caller leaving included) ends the
        # generation now, not when the garbage collector gets to it.
        deltas = self._generate(job, request_id=request_id, budget=budget, usage=usage)
        async with contextlib.aclosing(deltas):
            if not (job.output_checks.toxicity or job.output_checks.factuality):
                async for delta in deltas:
                    yield delta
                return
            held: dict[int, str] = {}
            async for delta in deltas:
                if delta.echoed:  # the prompt itself is not checked: send it at once
                    yield ChoiceDelta(delta.index, delta.echoed)
                prompt = job.prompts[delta.index // job.n]
                text = held.get(delta.index, "") + delta.text[len(delta.echoed) :]
                release, held[delta.index] = (text, "") if delta.finish_reason else split_releasable(text)
                if release or delta.finish_reason:
                    await self._verify(job, [(prompt, release)], request_id=request_id, budget=budget)
                    yield ChoiceDelta(delta.index, release, delta.finish_reason)

    async def _verify(self, job: CompletionJob, pairs: list[tuple[str, str]], *, request_id: str, budget: Budget):
        if not (job.output_checks.toxicity or job.output_checks.factuality):
            return
        with _counted("output"):
            await self._output.verify(job.output_checks, pairs, timeout_s=budget.for_check(), request_id=request_id)

    async def _generate(
        self, job: CompletionJob, *, request_id: str, budget: Budget, usage: Usage
    ) -> AsyncIterator[ChoiceDelta]:
        """Runs the input checks, then every choice concurrently; yields deltas as they arrive.

        With `speculate`, the choices start generating from the caller's prompts while the
        input checks run. Nothing is read from them before the checks pass; a refused prompt
        cancels them, and a prompt the PII check rewrote is generated again from its new
        text, so callers see exactly what generating after the checks would give them.
        """
        asked = bool(job.input_checks.pii or job.input_checks.block_prompt_injection)
        choices = [(p, j) for p in range(len(job.prompts)) for j in range(job.n)]

        def start(prompts: list[str], tag: str) -> tuple[asyncio.Queue, list[asyncio.Task]]:
            queue: asyncio.Queue[tuple[int, Delta | Exception | None]] = asyncio.Queue()
            timeout_s = budget.remaining()
            tasks = [
                asyncio.create_task(
                    self._run_choice(job, index, prompts[p], f"{request_id}-{index}{tag}", timeout_s, queue)
                )
                for index, (p, _) in enumerate(choices)
            ]
            return queue, tasks

        original = list(job.prompts)
        tasks: list[asyncio.Task] = []
        try:
            if asked and self._speculate:
                queue, tasks = start(original, "")
            with _counted("input", asked):
                prompts = await self._input.protect(
                    job.input_checks, original, timeout_s=budget.for_check(), request_id=request_id
                )
            if not tasks or prompts != original:
                await _cancel(tasks)  # (distinct request ids: a late cancel hits only these)
                queue, tasks = start(prompts, "-checked" if tasks else "")
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
                echoed = prompts[choices[index][0]] if job.echo and index not in started else ""
                started.add(index)
                last[index] = item
                yield ChoiceDelta(index, echoed + item.text, item.finish_reason or None, echoed)
            # Each prompt's tokens count once, however many samples it has.
            usage.prompt_tokens = sum(last[i].prompt_tokens for i, (_, j) in enumerate(choices) if j == 0)
            usage.completion_tokens = sum(d.completion_tokens for d in last.values())
        finally:
            await _cancel(tasks)

    async def _run_choice(
        self, job: CompletionJob, index: int, prompt: str, request_id: str, timeout_s: float, queue: asyncio.Queue
    ) -> None:
        """Streams one choice into `queue` as (index, delta), then (index, None) or (index, error)."""
        params = job.sampling.as_parameters(choice_seed(job.sampling.seed, index))
        try:
            stream = self._generation.stream(prompt, params, request_id=request_id, timeout_s=timeout_s)
            async with contextlib.aclosing(stream) as deltas:
                async for delta in deltas:
                    if delta.text or delta.finish_reason:  # skip heartbeats
                        await queue.put((index, delta))
        except Exception as e:  # handed to the consumer, which decides the status
            await queue.put((index, e))
        else:
            await queue.put((index, None))

    async def complete(self, job: CompletionJob, *, request_id: str, timeout_s: float) -> Completion:
        """Runs the whole request, checks every choice in one batched call per check, returns all."""
        completion = Completion(choices=[Choice(i) for i in range(len(job.prompts) * job.n)])
        generated = [""] * len(completion.choices)
        budget = Budget(timeout_s, self._check_timeout_s)
        async with contextlib.aclosing(
            self._generate(job, request_id=request_id, budget=budget, usage=completion.usage)
        ) as deltas:
            async for delta in deltas:
                choice = completion.choices[delta.index]
                choice.text += delta.text
                generated[delta.index] += delta.text[len(delta.echoed) :]
                if delta.finish_reason:
                    choice.finish_reason = delta.finish_reason
        pairs = [(job.prompts[i // job.n], text) for i, text in enumerate(generated)]
        await self._verify(job, pairs, request_id=request_id, budget=budget)
        return completion


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def _counted(stage: str, asked: bool = True):
    """Counts a check stage's outcome (CHECKS) and turns its failures into PipelineErrors:
    a refusal is 400, a check that could not run keeps its status (503, 504)."""
    try:
        yield
    except (InputCheckFailed, OutputCheckFailed) as e:
        CHECKS.labels(stage, "refused").inc()
        raise PipelineError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
    except CheckError as e:
        CHECKS.labels(stage, _failure(e)).inc()
        raise PipelineError(e.code, e.message) from None
    if asked:
        CHECKS.labels(stage, "passed").inc()
