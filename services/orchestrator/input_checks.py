"""Input checks: PII (block or replace) and prompt injection, run concurrently before generation."""

import asyncio

import grpc

from orchestrator.check_clients import CheckError, InjectionClient, PiiClient
from orchestrator.validation import InputChecks


class InputCheckFailed(Exception):
    """The prompt is refused; the message is returned to the caller as a 400."""


class InputChecker:
    def __init__(self, pii: PiiClient, injection: InjectionClient, *, injection_threshold: float):
        self._pii = pii
        self._injection = injection
        self._injection_threshold = injection_threshold

    async def protect(self, checks: InputChecks, prompts: list[str], *, timeout_s: float, request_id: str) -> list[str]:
        """Returns the prompts to generate from (rewritten when `pii: replace`).

        Raises InputCheckFailed when a prompt is refused, CheckError when a check cannot run.
        """
        jobs = {}
        excluded = list(checks.entity_list)
        if checks.pii == "block":
            jobs["pii"] = self._pii.analyze(prompts, excluded, timeout_s=timeout_s, request_id=request_id)
        elif checks.pii == "replace":
            jobs["pii"] = self._pii.anonymize(
                prompts, checks.pii_replace_method, excluded, timeout_s=timeout_s, request_id=request_id
            )
        if checks.block_prompt_injection:
            jobs["injection"] = self._injection.classify(prompts, timeout_s=timeout_s, request_id=request_id)
        if not jobs:
            return prompts
        results = dict(zip(jobs, await asyncio.gather(*jobs.values(), return_exceptions=True), strict=True))
        for outcome in results.values():
            if isinstance(outcome, CheckError):
                raise outcome
            if isinstance(outcome, BaseException):
                raise CheckError(grpc.StatusCode.INTERNAL, "input check failed to run") from outcome
        if "injection" in results and max(results["injection"]) > self._injection_threshold:
            raise InputCheckFailed("prompt injection detected")
        if checks.pii == "block" and any(results["pii"]):
            raise InputCheckFailed("pii detected")
        if checks.pii == "replace":
            return results["pii"]
        return prompts
