"""Faults under load: SIGKILL one process at a time while a mixed workload flows.

For each process: requests that needed it fail fast and cleanly (503/504 JSON, or a final
error event on a stream), requests that did not need it keep succeeding, the supervisor
restarts it, and the success rate returns to 100%. Nothing answered 200 skipped a check.
"""

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

MODEL = "SmolLM2-135M-Instruct"
TIMEOUT_S = 30  # no request may take longer than this, whatever died
FAIL_FAST_S = 8  # a request that fails because its dependency died fails within this
pytestmark = pytest.mark.integration


@dataclass
class Outcome:
    kind: str
    ok: bool
    clean: bool  # a success, or a clean failure (JSON error / final error event)
    seconds: float
    finished_at: float
    detail: str = ""


def _completion(mesh, client, extra) -> tuple[bool, bool, str]:
    # Greedy, so the output checks see the same text every time: " 100 degrees Celsius",
    # which passes both toxicity and factuality against this prompt.
    body = {
        "model": MODEL,
        "prompt": "Water boils at 100 degrees Celsius. Water boils at",
        "max_tokens": 6,
        "temperature": 0,
        **extra,
    }
    r = client.post("/completions", json=body, headers=mesh.headers())
    if r.status_code == 200:
        body = r.json()
        ok = bool(body["choices"]) and all(c["finish_reason"] in ("stop", "length") for c in body["choices"])
        return ok, ok, ""
    clean = r.headers.get("content-type", "").startswith("application/json") and "error" in r.json()
    return False, clean and r.status_code in (503, 504), f"{r.status_code} {r.text[:80]}"


def _stream(mesh, client) -> tuple[bool, bool, str]:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0, "stream": True}
    with client.stream("POST", "/completions", json=body, headers=mesh.headers()) as r:
        if r.status_code != 200:
            r.read()
            return False, r.status_code in (503, 504) and "error" in r.json(), f"{r.status_code}"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    if events and events[-1] == "[DONE]":
        return True, True, ""
    clean = bool(events) and "error" in json.loads(events[-1])
    return False, clean, "stream ended without [DONE]"


def _check(mesh, client, path, body) -> tuple[bool, bool, str]:
    r = client.post(path, json=body, headers=mesh.headers())
    if r.status_code == 200:
        return True, True, ""
    return False, r.status_code in (503, 504) and "error" in r.json(), f"{r.status_code}"


# Workloads and the processes each one needs (besides gateway and orchestrator).
WORKLOADS: dict[str, tuple[set[str], Callable]] = {
    "plain": ({"generation"}, lambda m, c: _completion(m, c, {})),
    "list": ({"generation"}, lambda m, c: _completion(m, c, {"prompt": ["One, two,", "Red, green,"]})),
    "stream": ({"generation"}, _stream),
    "pii_replace": ({"generation", "pii"}, lambda m, c: _completion(m, c, {"input": {"pii": "replace"}})),
    "injection": (
        {"generation", "injection"},
        lambda m, c: _completion(m, c, {"input": {"block_prompt_injection": True}}),
    ),
    "output_checks": (
        {"generation", "toxicity", "factuality"},
        lambda m, c: _completion(m, c, {"output": {"toxicity": True, "factuality": True}}),
    ),
    "toxicity": ({"toxicity"}, lambda m, c: _check(m, c, "/toxicity", {"text": "have a nice day"})),
    "pii": ({"pii"}, lambda m, c: _check(m, c, "/PII", {"prompt": "call 212-555-0148", "replace": True})),
}


def run_load(mesh, stop: threading.Event, outcomes: list[Outcome], worker: int) -> None:
    kinds = list(WORKLOADS)
    i = worker
    with httpx.Client(base_url=mesh.base_url, timeout=TIMEOUT_S + 5) as client:
        while not stop.is_set():
            kind = kinds[i % len(kinds)]
            i += 1
            started = time.monotonic()
            try:
                ok, clean, detail = WORKLOADS[kind][1](mesh, client)
            except httpx.TransportError as e:  # Envoy itself is down: connection refused
                ok, clean, detail = False, True, type(e).__name__
                time.sleep(0.05)
            except Exception as e:  # noqa: BLE001 - anything else is an unclean failure
                ok, clean, detail = False, False, repr(e)[:120]
            outcomes.append(Outcome(kind, ok, clean, time.monotonic() - started, time.monotonic(), detail))


@pytest.mark.parametrize(
    "victim", ["pii", "injection", "toxicity", "factuality", "generation", "orchestrator", "gateway"]
)
def test_killing_a_process_under_load(mesh, victim, record_property):
    mesh.wait_stable()  # the previous case's restart must have settled
    outcomes: list[Outcome] = []
    stop = threading.Event()
    workers = [threading.Thread(target=run_load, args=(mesh, stop, outcomes, w)) for w in range(4)]
    for w in workers:
        w.start()
    time.sleep(2)
    pid = int(mesh.supervisorctl("pid", victim))
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    # Run until every workload has succeeded again after the restart (or give up).
    recovered_at = None
    deadline = killed_at + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        after = [o for o in outcomes if o.finished_at > killed_at]
        last = {}
        for o in after:
            last[o.kind] = o.ok
        if len(last) == len(WORKLOADS) and all(last.values()):
            recovered_at = max(o.finished_at for o in after if o.ok)
            break
    time.sleep(2)
    stop.set()
    for w in workers:
        w.join(TIMEOUT_S + 10)

    after = [o for o in outcomes if o.finished_at > killed_at]
    failures = [o for o in after if not o.ok]
    unclean = [o for o in after if not o.clean]
    everything = victim in ("gateway", "orchestrator")
    unaffected = [o for o in failures if not everything and victim not in WORKLOADS[o.kind][0]]
    record_property("failed", len(failures))
    record_property("longest_failure_s", max((o.seconds for o in failures), default=0))
    record_property("recovery_s", None if recovered_at is None else recovered_at - killed_at)
    print(
        f"\n{victim}: {len(failures)} failed of {len(after)}, longest failure "
        f"{max((o.seconds for o in failures), default=0):.2f}s, recovered after "
        f"{'never' if recovered_at is None else f'{recovered_at - killed_at:.1f}s'}"
    )
    assert recovered_at is not None, f"{victim} did not recover: {[o.detail for o in failures[-5:]]}"
    assert not unclean, [(o.kind, o.detail) for o in unclean[:5]]
    assert not unaffected, [(o.kind, o.detail) for o in unaffected[:5]]
    assert max(o.seconds for o in after) < TIMEOUT_S
    assert max((o.seconds for o in failures), default=0) < FAIL_FAST_S
