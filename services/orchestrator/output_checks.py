"""Output checks: toxicity and factuality of generated text, each one batched call per request."""

import asyncio
import re

import grpc

from orchestrator.check_clients import CheckError, FactualityClient, ToxicityClient
from orchestrator.validation import OutputChecks

# Where streamed text may be released for checking: after a sentence end or a line break.
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


class OutputCheckFailed(Exception):
    """Generated text failed a check; the message is returned to the caller as a 400."""


class OutputChecker:
    def __init__(
        self,
        toxicity: ToxicityClient,
        factuality: FactualityClient,
        *,
        toxicity_threshold: float,
        factuality_threshold: float,
    ):
        self._toxicity = toxicity
        self._factuality = factuality
        self._toxicity_threshold = toxicity_threshold
        self._factuality_threshold = factuality_threshold

    async def verify(
        self, checks: OutputChecks, pairs: list[tuple[str, str]], *, timeout_s: float, request_id: str
    ) -> None:
        """Checks every (reference prompt, generated text) pair; raises on the first failure.

        Raises OutputCheckFailed when a text fails, CheckError when a check cannot run.
        """
        pairs = [(ref, text) for ref, text in pairs if text.strip()]
        if not pairs or not (checks.toxicity or checks.factuality):
            return
        jobs = {}
        if checks.toxicity:
            jobs["toxicity"] = self._toxicity.score([t for _, t in pairs], timeout_s=timeout_s, request_id=request_id)
        if checks.factuality:
            jobs["factuality"] = self._factuality.score(pairs, timeout_s=timeout_s, request_id=request_id)
        results = dict(zip(jobs, await asyncio.gather(*jobs.values(), return_exceptions=True), strict=True))
        for outcome in results.values():
            if isinstance(outcome, CheckError):
                raise outcome
            if isinstance(outcome, BaseException):
                raise CheckError(grpc.StatusCode.INTERNAL, "output check failed to run") from outcome
        if "toxicity" in results and max(results["toxicity"]) > self._toxicity_threshold:
            raise OutputCheckFailed("failed toxicity check")
        if "factuality" in results and min(results["factuality"]) < self._factuality_threshold:
            raise OutputCheckFailed("failed factuality check")


def split_releasable(buffer: str) -> tuple[str, str]:
    """Splits streamed text into (complete sentences, the unfinished rest)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(buffer)]
    if not ends:
        return "", buffer
    return buffer[: ends[-1]], buffer[ends[-1] :]
