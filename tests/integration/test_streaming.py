"""Streaming end to end: SSE for REST callers, cancellation when the client goes away."""

import json
import time

import httpx
import pytest

MODEL = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.integration


def no_eos_bias(mesh) -> dict[str, float]:
    """A logit_bias that bans end-of-text, so a generation runs until max_tokens."""
    info = json.loads((mesh.model_dir / "model_info.json").read_text())
    return {str(t): -100 for t in info["eos_token_ids"]}


def test_disconnecting_client_cancels_its_generation(mesh):
    max_tokens = 1500
    body = {
        "model": MODEL,
        "prompt": "Count from one to a thousand: one, two,",
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "logit_bias": no_eos_bias(mesh),
    }
    tokens_before = mesh.generation_metric("generation_tokens_total")
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{mesh.base_url}/completions", json=body, headers=mesh.headers()) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # kept referenced: dropping it would close the connection here
            seen = 0
            for line in lines:
                seen += line.startswith("data: ")
                if seen >= 5:
                    break
            assert mesh.active_sequences() >= 1  # it is generating for us
        # Leaving the block closed the connection after 5 of 1500 tokens.
    deadline = time.monotonic() + 20
    while mesh.active_sequences() > 0:
        assert time.monotonic() < deadline, "generation still running after the client disconnected"
        time.sleep(0.1)
    generated = mesh.generation_metric("generation_tokens_total") - tokens_before
    assert generated < max_tokens / 3, f"{generated} tokens generated for a client that left after 5"


def test_error_before_first_token_is_a_normal_json_error(mesh):
    r = httpx.post(
        f"{mesh.base_url}/completions",
        headers=mesh.headers(),
        timeout=30,
        json={"model": MODEL, "prompt": "x", "stream": True, "temperature": 9},
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert "temperature" in r.json()["error"]


def test_list_prompts_stream_every_choice(mesh):
    body = {
        "model": MODEL,
        "prompt": ["The capital of France is", "One, two, three,"],
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{mesh.base_url}/completions", json=body, headers=mesh.headers(), timeout=60) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in map(json.loads, data[:-1]):
        for c in chunk["choices"]:
            texts[c["index"]] = texts.get(c["index"], "") + c["text"]
            if c["finish_reason"]:
                finishes[c["index"]] = c["finish_reason"]
    whole = httpx.post(
        f"{mesh.base_url}/completions", json={**body, "stream": False}, headers=mesh.headers(), timeout=60
    ).json()
    assert texts == {c["index"]: c["text"] for c in whole["choices"]}
    assert set(finishes) == {0, 1}
