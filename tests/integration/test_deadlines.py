"""Deadlines: the caller's budget bounds every request; a stalled dependency gives 504, not a hang."""

import os
import signal
import time

import grpc
import httpx
import pytest

from guardmesh.v1 import completion_service_pb2 as pb
from guardmesh.v1 import completion_service_pb2_grpc

MODEL = "SmolLM2-135M-Instruct"
LONG = {
    "model": MODEL,
    "prompt": "Count: one, two,",
    "max_tokens": 1500,
    "temperature": 0,
    "logit_bias": {"0": -100, "2": -100},
}
pytestmark = pytest.mark.integration


def test_a_rest_caller_budget_ends_a_long_generation_with_504(mesh):
    started = time.monotonic()
    r = httpx.post(
        f"{mesh.base_url}/completions", json=LONG, timeout=60, headers={**mesh.headers(), "x-request-timeout": "1"}
    )
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and "timed out" in r.json()["error"]
    assert elapsed < 3
    deadline = time.monotonic() + 10
    while mesh.active_sequences() > 0:  # the abandoned generation is cancelled, not left running
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_bad_budget_header_is_400(mesh):
    r = httpx.post(
        f"{mesh.base_url}/completions",
        json={"model": MODEL, "prompt": "x"},
        timeout=30,
        headers={**mesh.headers(), "x-request-timeout": "soon"},
    )
    assert r.status_code == 400 and "x-request-timeout" in r.json()["error"]


def test_a_grpc_deadline_is_honoured(mesh):
    channel = grpc.insecure_channel(mesh.orchestrator_address)
    stub = completion_service_pb2_grpc.CompletionServiceStub(channel)
    request = pb.CreateCompletionRequest(model=MODEL, max_tokens=1500, temperature=0, logit_bias={"0": -100, "2": -100})
    request.prompt.string_value = "Count: one, two,"
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateCompletion(request, metadata=[("authorization", f"Bearer {mesh.api_key}")], timeout=1.0)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    channel.close()


def test_a_stalled_check_service_gives_504_within_the_check_timeout(mesh):
    pid = int(mesh.supervisorctl("pid", "toxicity"))
    os.kill(pid, signal.SIGSTOP)  # alive but not answering
    try:
        body = {"model": MODEL, "prompt": "Hello", "max_tokens": 3}
        started = time.monotonic()
        r = httpx.post(
            f"{mesh.base_url}/completions",
            json={**body, "output": {"toxicity": True}},
            headers=mesh.headers(),
            timeout=60,
        )
        assert r.status_code == 504 and r.json() == {"error": "toxicity check timed out"}
        assert time.monotonic() - started < 10  # the 5 s check timeout plus generation
        assert (
            httpx.post(f"{mesh.base_url}/completions", json=body, headers=mesh.headers(), timeout=60).status_code == 200
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    mesh.wait_ready(timeout_s=60)
