"""Output checks through the gateway: toxicity and factuality, in /completions and standalone."""

import json
import time

import httpx
import pytest
from predictionguard import PredictionGuard
from tokenizers import Tokenizer

MODEL = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.integration


def post(mesh, path, body):
    return httpx.post(f"{mesh.base_url}{path}", json=body, headers=mesh.headers(), timeout=120)


def forced(mesh, word: str) -> dict[str, float]:
    """A logit_bias that makes greedy generation repeat one word (deterministic output)."""
    tokenizer = Tokenizer.from_file(str(mesh.model_dir / "tokenizer.json"))
    [token] = tokenizer.encode(word, add_special_tokens=False).ids
    return {str(token): 100}


def test_standalone_toxicity_with_the_sdk(mesh):
    client = PredictionGuard(api_key=mesh.api_key, url=mesh.base_url)
    toxic = client.toxicity.check(text="I will find you and hurt you, you worthless idiot.")
    calm = client.toxicity.check(text="Please kill the process and restart the server.")
    assert toxic["object"] == "toxicity.check" and toxic["id"].startswith("toxi-")
    assert toxic["checks"][0]["index"] == 0
    assert toxic["checks"][0]["score"] > 0.5 > calm["checks"][0]["score"]


def test_standalone_factuality_with_the_sdk(mesh):
    client = PredictionGuard(api_key=mesh.api_key, url=mesh.base_url)
    reference = "The Eiffel Tower in Paris was completed in 1889 for the World's Fair."
    right = client.factuality.check(reference=reference, text="The Eiffel Tower was completed in 1889.")
    wrong = client.factuality.check(reference=reference, text="The Eiffel Tower was completed in 1887.")
    assert right["object"] == "factuality.check" and right["id"].startswith("fact-")
    assert right["checks"][0]["score"] > 0.5 > wrong["checks"][0]["score"]


def test_standalone_checks_reject_empty_input(mesh):
    assert post(mesh, "/toxicity", {"text": ""}).status_code == 400
    r = post(mesh, "/factuality", {"reference": "x", "text": ""})
    assert r.status_code == 400 and set(r.json()) == {"error"}


def test_toxic_output_fails_the_request(mesh):
    body = {
        "model": MODEL,
        "prompt": "You are",
        "max_tokens": 6,
        "temperature": 0,
        "logit_bias": forced(mesh, " stupid"),
    }
    unchecked = post(mesh, "/completions", body)
    assert unchecked.status_code == 200 and unchecked.json()["choices"][0]["text"] == " stupid" * 6
    r = post(mesh, "/completions", {**body, "output": {"toxicity": True}})
    assert r.status_code == 400 and r.json() == {"error": "failed toxicity check"}


def test_clean_output_passes_the_toxicity_check(mesh):
    r = post(
        mesh,
        "/completions",
        {
            "model": MODEL,
            "prompt": "The capital of France is",
            "max_tokens": 8,
            "temperature": 0,
            "output": {"toxicity": True},
        },
    )
    assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["text"]


def test_unsupported_output_fails_the_factuality_check(mesh):
    body = {
        "model": MODEL,
        "prompt": "The Eiffel Tower in Paris was completed in 1889.",
        "max_tokens": 5,
        "temperature": 0,
        "logit_bias": forced(mesh, " banana"),
        "output": {"factuality": True},
    }
    r = post(mesh, "/completions", body)
    assert r.status_code == 400 and r.json() == {"error": "failed factuality check"}


def test_supported_output_passes_the_factuality_check_with_the_sdk(mesh):
    client = PredictionGuard(api_key=mesh.api_key, url=mesh.base_url)
    reference = "Water boils at 100 degrees Celsius. Water boils at"
    result = client.completions.create(
        model=MODEL, prompt=reference, max_tokens=6, temperature=0, output={"factuality": True, "toxicity": True}
    )
    assert "100 degrees" in result["choices"][0]["text"]


def test_streaming_with_output_checks_ends_with_an_error_event_on_failure(mesh):
    body = {
        "model": MODEL,
        "prompt": "You are",
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "logit_bias": forced(mesh, " stupid"),
        "output": {"toxicity": True},
    }
    with httpx.stream("POST", f"{mesh.base_url}/completions", json=body, headers=mesh.headers(), timeout=60) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    # The first check happens at the end of the text (no sentence end before it): nothing
    # toxic is released, and the failure is a normal 400 before any event...
    assert r.status_code == 400 or json.loads(events[-1]) == {"error": "failed toxicity check"}
    assert all("stupid" not in e for e in events[:-1])


def test_streaming_with_output_checks_releases_checked_text(mesh):
    body = {
        "model": MODEL,
        "prompt": "The capital of France is",
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
        "output": {"toxicity": True},
    }
    whole = post(mesh, "/completions", {**body, "stream": False}).json()["choices"][0]["text"]
    with httpx.stream("POST", f"{mesh.base_url}/completions", json=body, headers=mesh.headers(), timeout=60) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert "".join(json.loads(d)["choices"][0]["text"] for d in data[:-1]) == whole


def test_a_check_service_that_is_down_is_503_only_for_requests_that_need_it(mesh):
    mesh.supervisorctl("stop", "toxicity")
    try:
        body = {"model": MODEL, "prompt": "Hello", "max_tokens": 3}
        started = time.monotonic()
        r = post(mesh, "/completions", {**body, "output": {"toxicity": True}})
        assert r.status_code == 503 and r.json() == {"error": "toxicity check unavailable"}
        assert time.monotonic() - started < 5
        assert post(mesh, "/completions", body).status_code == 200
        assert post(mesh, "/completions", {**body, "output": {"factuality": True}}).status_code in (200, 400)
        assert httpx.get(f"{mesh.base_url}/readyz", timeout=10).status_code == 503
    finally:
        mesh.supervisorctl("start", "toxicity")
    mesh.wait_ready(timeout_s=120)
    assert post(mesh, "/toxicity", {"text": "hello there"}).status_code == 200
