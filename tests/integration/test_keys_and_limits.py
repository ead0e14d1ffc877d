"""Keys, scopes and rate limits through the real gateway, for REST and gRPC callers."""

import json
import threading
import time

import grpc
import httpx
import pytest
from mesh_keys import SCOPED_KEYS, write_keys_file
from predictionguard import PredictionGuard

from guardmesh.v1 import completion_service_pb2 as pb
from guardmesh.v1 import completion_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc

MODEL = "SmolLM2-135M-Instruct"
FORBIDDEN = "api understands the request but refuses to authorize it"
pytestmark = pytest.mark.integration


def call(mesh, method, path, key, body=None):
    return httpx.request(
        method, f"{mesh.base_url}{path}", json=body, timeout=60, headers={"Authorization": f"Bearer {key}"}
    )


def test_a_key_outside_its_endpoints_is_403(mesh):
    key = "gm-test-models-only"
    assert call(mesh, "GET", "/models", key).status_code == 200
    for method, path, body in [
        ("POST", "/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2}),
        ("GET", "/completions", None),
        ("POST", "/PII", {"prompt": "hi", "replace": True}),
        ("POST", "/toxicity", {"text": "hi"}),
    ]:
        r = call(mesh, method, path, key, body)
        assert r.status_code == 403 and r.json() == {"error": FORBIDDEN}, path
        assert r.headers["content-type"].startswith("application/json")


def test_a_key_outside_its_models_is_403(mesh):
    r = call(mesh, "POST", "/completions", "gm-test-other-model", {"model": MODEL, "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 403 and r.json() == {"error": FORBIDDEN}


def test_a_key_over_its_rate_gets_429_with_retry_after(mesh):
    key = "gm-test-slow"  # 2 requests per minute
    statuses = [call(mesh, "GET", "/models", key).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    r = call(mesh, "GET", "/models", key)
    assert r.status_code == 429 and "rate limit" in r.json()["error"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert call(mesh, "GET", "/models", mesh.api_key).status_code == 200  # other keys are unaffected
    client = PredictionGuard(api_key=key, url=mesh.base_url)
    with pytest.raises(ValueError, match="Too many requests"):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=2)


def test_grpc_callers_get_the_same_answers(mesh):
    channel = grpc.insecure_channel(mesh.orchestrator_address)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    completions = completion_service_pb2_grpc.CompletionServiceStub(channel)
    request = pb.CreateCompletionRequest(model=MODEL, max_tokens=2)
    request.prompt.string_value = "hi"
    with pytest.raises(grpc.RpcError) as err:
        completions.CreateCompletion(request, metadata=[("authorization", "Bearer gm-test-models-only")], timeout=30)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, FORBIDDEN)
    with pytest.raises(grpc.RpcError) as err:
        completions.CreateCompletion(request, metadata=[("authorization", "Bearer nope")], timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = models.ListModels(
        model_service_pb2.ListModelsRequest(), metadata=[("authorization", "Bearer gm-test-models-only")], timeout=30
    )
    assert ok.data[0].id == MODEL
    channel.close()


def test_revoking_a_key_lets_the_running_request_finish_and_refuses_the_next(mesh):
    key = "gm-test-revocable"
    body = {
        "model": MODEL,
        "prompt": "Once upon a time",
        "max_tokens": 150,
        "temperature": 0,
        "stream": True,
        "logit_bias": {"0": -100, "2": -100},
    }
    events: list[str] = []
    started = threading.Event()

    def stream():
        with httpx.stream(
            "POST", f"{mesh.base_url}/completions", json=body, timeout=120, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(30)
    try:
        write_keys_file(mesh.keys_file, {k: v for k, v in SCOPED_KEYS.items() if k != key})
        deadline = time.monotonic() + 10
        while call(mesh, "GET", "/models", key).status_code != 401:  # reloaded within a second or two
            assert time.monotonic() < deadline
            time.sleep(0.2)
        reader.join(60)
        assert events[-1] == "[DONE]"
        text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
        assert len(text) > 100  # the whole completion arrived
        assert call(mesh, "POST", "/completions", key, {"model": MODEL, "prompt": "x"}).status_code == 401
    finally:
        write_keys_file(mesh.keys_file, SCOPED_KEYS)


def test_metrics_are_not_on_the_public_listener_but_on_their_own_port(mesh):
    assert call(mesh, "GET", "/metrics", mesh.api_key).status_code == 404
    port = mesh.env["ORCHESTRATOR_METRICS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'guardmesh_grpc_requests_total{code="OK",method="ListModels"}' in text
    assert "guardmesh_check_outcomes_total" in text or "guardmesh_grpc_request_seconds_bucket" in text


def test_grpc_callers_are_rate_limited_too(mesh):
    channel = grpc.insecure_channel(mesh.orchestrator_address)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    codes = []
    for _ in range(4):  # the slow key allows 2 a minute (its bucket may already be empty)
        try:
            models.ListModels(
                model_service_pb2.ListModelsRequest(), metadata=[("authorization", "Bearer gm-test-slow")], timeout=30
            )
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
            assert e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or dict(e.trailing_metadata())["retry-after"]
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
    channel.close()
