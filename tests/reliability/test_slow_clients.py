"""Slow, stuck and vanishing clients hold nothing: no worker, no generation, no slot."""

import asyncio
import random
import socket
import time

import httpx
import pytest

MODEL = "SmolLM2-135M-Instruct"
pytestmark = pytest.mark.integration


def test_a_client_that_sends_half_a_body_gets_408_and_holds_nothing(mesh):
    host, port = mesh.base_url.removeprefix("http://").split(":")
    stuck = []
    for _ in range(20):  # more stuck clients than Envoy has workers
        s = socket.create_connection((host, int(port)), timeout=30)
        s.sendall(
            b"POST /completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + mesh.api_key.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"model":'
        )
        stuck.append(s)
    started = time.monotonic()
    r = httpx.post(
        f"{mesh.base_url}/completions",
        headers=mesh.headers(),
        timeout=30,
        json={"model": MODEL, "prompt": "Hello", "max_tokens": 2},
    )
    assert r.status_code == 200  # served while the stuck clients wait
    answer = stuck[0].recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408"), answer[:100]
    assert '{"error":"request timeout: the request did not arrive in time"}' in answer
    assert time.monotonic() - started < 10  # GUARDMESH_GATEWAY_REQUEST_TIMEOUT is 3 s in the test mesh
    for s in stuck:
        s.close()


def test_streams_abandoned_at_random_points_leave_no_generation_running(mesh):
    rng = random.Random(7)
    body = {
        "model": MODEL,
        "prompt": "Count: one, two,",
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
        "logit_bias": {"0": -100, "2": -100},
    }

    async def abandon(client: httpx.AsyncClient, after_events: int) -> None:
        async with client.stream("POST", f"{mesh.base_url}/completions", json=body, headers=mesh.headers()) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= after_events:
                    return  # leaving the block drops the connection mid-stream

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            await asyncio.gather(*(abandon(client, rng.randint(1, 40)) for _ in range(12)))

    asyncio.run(run())
    deadline = time.monotonic() + 15
    while mesh.active_sequences() > 0:
        assert time.monotonic() < deadline, "generations still running for clients that left"
        time.sleep(0.2)
