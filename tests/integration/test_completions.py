"""A REST caller and a gRPC caller get real completions from the real mesh."""

import json

import grpc
import httpx
import pytest
from openai import OpenAI
from predictionguard import PredictionGuard

from guardmesh.v1 import completion_service_pb2 as pb
from guardmesh.v1 import completion_service_pb2_grpc

MODEL = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.integration


def post(mesh, body, key=None, **kw):
    return httpx.post(f"{mesh.base_url}/completions", json=body, headers=mesh.headers(key), timeout=120, **kw)


def test_completion_is_real_text_with_correct_usage(mesh):
    r = post(
        mesh, {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "top_p": 1}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-") and body["model"] == MODEL
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and "Paris" in choice["text"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] == 5  # "The capital of France is" in SmolLM2's tokenizer
    assert 1 <= usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_sampling_parameters_from_the_issue(mesh):
    body = {
        "model": MODEL,
        "prompt": "Once upon a time, in a small village,",
        "max_tokens": 8,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 1,
    }
    r = post(mesh, body)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["choices"][0]["finish_reason"] == "length"
    assert first["usage"]["completion_tokens"] == 8
    assert len(first["choices"][0]["text"].split()) >= 2
    assert post(mesh, body).json()["choices"] == first["choices"]  # same seed, same text


def test_greedy_is_deterministic_and_list_prompts_give_one_choice_each(mesh):
    body = {
        "model": MODEL,
        "prompt": ["One, two, three,", "The capital of France is"],
        "max_tokens": 6,
        "temperature": 0,
    }
    a, b = post(mesh, body).json(), post(mesh, body).json()
    assert [c["index"] for c in a["choices"]] == [0, 1]
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]
    assert "four" in a["choices"][0]["text"].lower()
    assert "Paris" in a["choices"][1]["text"]
    single = post(mesh, {**body, "prompt": "One, two, three,"}).json()
    assert single["choices"][0]["text"] == a["choices"][0]["text"]  # batching does not change greedy text


def test_predictionguard_sdk_unchanged(mesh):
    client = PredictionGuard(api_key=mesh.api_key, url=mesh.base_url)  # calls GET /completions
    result = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=10)
    assert result["choices"][0]["text"].strip()
    assert result["usage"]["completion_tokens"] <= 10
    assert MODEL in client.completions.list_models()


def test_openai_sdk_unchanged(mesh):
    client = OpenAI(base_url=mesh.base_url, api_key=mesh.api_key)
    result = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=10, temperature=0)
    assert "Paris" in result.choices[0].text
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert [m.id for m in client.models.list()] == [MODEL]


def test_streamed_text_equals_the_unstreamed_text(mesh):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0}
    whole = post(mesh, body).json()["choices"][0]["text"]
    with httpx.stream(
        "POST", f"{mesh.base_url}/completions", json={**body, "stream": True}, headers=mesh.headers(), timeout=120
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_openai_sdk_streams(mesh):
    client = OpenAI(base_url=mesh.base_url, api_key=mesh.api_key)
    stream = client.completions.create(
        model=MODEL,
        prompt="Once upon a time",
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 8


def test_models_routes(mesh):
    for path in ("/models", "/models/completion"):
        r = httpx.get(f"{mesh.base_url}{path}", headers=mesh.headers(), timeout=10)
        assert r.status_code == 200
        assert r.json()["object"] == "list" and r.json()["data"][0]["id"] == MODEL
    assert httpx.get(f"{mesh.base_url}/models/embedding", headers=mesh.headers(), timeout=10).json()["data"] == []
    r = httpx.get(f"{mesh.base_url}/models/nonsense", headers=mesh.headers(), timeout=10)
    assert r.status_code == 404 and "error" in r.json()


def test_readyz_needs_no_key(mesh):
    r = httpx.get(f"{mesh.base_url}/readyz", timeout=10)
    assert r.status_code == 200 and r.json()["services"]["generation"] == "SERVING"


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_wrong_key_is_401_json(mesh, key):
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    for method, path in (("POST", "/completions"), ("GET", "/completions"), ("GET", "/models")):
        r = httpx.request(
            method, f"{mesh.base_url}{path}", json={"model": MODEL, "prompt": "x"}, headers=headers, timeout=10
        )
        assert r.status_code == 401, (path, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert set(r.json()) == {"error"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": MODEL}, "prompt is required"),
        ({"model": "not-a-model", "prompt": "x"}, "is not served"),
        ({"model": MODEL, "prompt": "x", "temperature": 5}, "temperature"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 5000}, "max_tokens"),
    ],
)
def test_bad_input_is_400_json(mesh, body, message):
    r = post(mesh, body)
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert not any(h.startswith("grpc-") for h in r.headers)


def test_malformed_json_is_400_json(mesh):
    r = httpx.post(
        f"{mesh.base_url}/completions",
        content=b'{"model": "x", "prompt": ',
        headers={**mesh.headers(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert set(r.json()) == {"error"}


def test_prompt_beyond_the_context_window_is_400_with_the_numbers(mesh):
    r = post(mesh, {"model": MODEL, "prompt": "word " * 3000, "max_tokens": 10})
    assert r.status_code == 400
    assert "maximum context length is 2048 tokens" in r.json()["error"]


def test_grpc_caller(mesh):
    channel = grpc.insecure_channel(mesh.orchestrator_address)
    stub = completion_service_pb2_grpc.CompletionServiceStub(channel)
    request = pb.CreateCompletionRequest(model=MODEL, max_tokens=8, temperature=0)
    request.prompt.string_value = "The capital of France is"
    response = stub.CreateCompletion(request, metadata=[("authorization", f"Bearer {mesh.api_key}")], timeout=60)
    assert "Paris" in response.choices[0].text and response.usage.prompt_tokens == 5
    chunks = list(stub.StreamCompletion(request, metadata=[("authorization", f"Bearer {mesh.api_key}")], timeout=60))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == response.choices[0].text
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateCompletion(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()
