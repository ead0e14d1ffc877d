"""Single-stream generation: through the gateway (Envoy → orchestrator → Triton) vs Triton directly.

Both paths run in the same process against the same mesh, alternating, so machine
noise hits both alike; the table reports the gateway's overhead as a ratio.
"""

import asyncio
import json
import time

import httpx
from benchlib import median, percentile, report

from orchestrator.generation_client import GenerationClient

MODEL = "SmolLM2-135M-Instruct"
PROMPT = "Once upon a time, in a small village by the sea,"
MAX_TOKENS = 64
RUNS = 8


async def via_gateway(client: httpx.AsyncClient, mesh) -> tuple[float, float, int]:
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", f"{mesh.base_url}/completions", json=body, headers=mesh.headers()) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk["choices"] and chunk["choices"][0]["text"]:
                ttft = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return ttft, time.perf_counter() - start, tokens


async def via_triton(client: GenerationClient) -> tuple[float, float, int]:
    params = {"max_tokens": MAX_TOKENS, "temperature": 0}
    start = time.perf_counter()
    ttft, tokens = None, 0
    async for delta in client.stream(PROMPT, params, request_id=f"bench-{time.time_ns()}", timeout_s=120):
        if ttft is None and delta.text:
            ttft = time.perf_counter() - start
        tokens = delta.completion_tokens
    return ttft, time.perf_counter() - start, tokens


def test_single_stream_gateway_vs_triton(mesh):
    async def run():
        samples = {"gateway": [], "triton": []}
        triton = GenerationClient(mesh.triton_address, MODEL)
        async with httpx.AsyncClient(timeout=120) as http:
            await via_gateway(http, mesh)  # warm both paths
            await via_triton(triton)
            for _ in range(RUNS):
                samples["gateway"].append(await via_gateway(http, mesh))
                samples["triton"].append(await via_triton(triton))
        await triton.close()
        return samples

    samples = asyncio.run(run())
    rows, stats = [], {}
    for path, runs in samples.items():
        ttft = [s[0] * 1000 for s in runs]
        tps = [s[2] / s[1] for s in runs]
        itl = [(s[1] - s[0]) / max(s[2] - 1, 1) * 1000 for s in runs]
        stats[path] = {
            "ttft_ms_p50": median(ttft),
            "ttft_ms_p95": percentile(ttft, 95),
            "tokens_per_s": median(tps),
            "inter_token_ms": median(itl),
            "tokens": runs[0][2],
        }
        rows.append([path, median(ttft), percentile(ttft, 95), median(tps), median(itl)])
    g, t = stats["gateway"], stats["triton"]
    rows.append(
        [
            "gateway/triton",
            g["ttft_ms_p50"] / t["ttft_ms_p50"],
            g["ttft_ms_p95"] / t["ttft_ms_p95"],
            g["tokens_per_s"] / t["tokens_per_s"],
            g["inter_token_ms"] / t["inter_token_ms"],
        ]
    )
    report(
        "generation_single_stream",
        f"single stream, {MAX_TOKENS} greedy tokens, {RUNS} runs each (medians)",
        ["path", "ttft_ms_p50", "ttft_ms_p95", "tokens_per_s", "inter_token_ms"],
        rows,
        {"stats": stats},
    )
    assert g["tokens"] == t["tokens"] == MAX_TOKENS
