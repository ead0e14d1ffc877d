"""Streaming end to end: SSE for REST callers, cancellation when the client goes away."""

import json
import socket
import struct
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
    body = json.dumps(
        {
            "model": MODEL,
            "prompt": "Count from one to a thousand: one, two,",
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "logit_bias": no_eos_bias(mesh),
        }
    ).encode()
    tokens_before = mesh.generation_metric("generation_tokens_total")
    host, port = mesh.base_url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=30)
    client.sendall(
        b"POST /completions HTTP/1.1\r\nHost: gm\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {mesh.api_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while received.count(b"data: ") < 5:  # the first five events
        received += client.recv(65536)
    assert received.startswith(b"HTTP/1.1 200")
    assert mesh.active_sequences() >= 1  # it is generating for us
    # Vanish abruptly (RST), as a crashed client or a dropped network path does.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
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
