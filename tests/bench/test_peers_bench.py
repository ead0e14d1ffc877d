"""Generation under concurrency: guardmesh (through the gateway) vs its peers on the same weights.

Systems, each measured ALONE (the CPU is shared; the others are stopped or idle):
- guardmesh: Envoy → orchestrator → Triton (continuous batching, int8 ONNX), streamed SSE;
- llama-cpp-python: its OpenAI-compatible server on the same SmolLM2 Q4_1 GGUF,
  `--interrupt_requests False`, `--n_threads 2` (one request generates at a time);
- transformers: `generate()` with batch = concurrency (left padding), fp32 weights
  dequantized from the same GGUF, 2 torch threads, in .venv-build (torch lives there).

Load: closed loop, `c` clients each sending `ROUNDS[c]` streamed greedy completions of
`MAX_TOKENS` tokens back to back (transformers: `ROUNDS[c]` generate() calls of batch c).
guardmesh and llama-cpp-python are measured by the same HTTP client (peers.py).

Metrics per concurrency: aggregate tokens/s (all completion tokens / wall time), TTFT
p50/p95 (request sent → first text chunk), inter-token latency p50/p95 (per request,
(last token − first token) / (tokens − 1)). Writes results/generation_concurrency.json
and results/generation_concurrency.png. Targets (issue 7) are evaluated and recorded,
not asserted: a miss is a finding, not a broken benchmark.
"""

import asyncio
import datetime
import os
import platform
import subprocess

import peers
import pytest
from benchlib import RESULTS, report

MODEL = "SmolLM2-135M-Instruct"
MAX_TOKENS = 64
CONCURRENCIES = [1, 4, 16, 32]
ROUNDS = {1: 8, 4: 3, 16: 2, 32: 2}
HF_ROUNDS = {1: 4, 4: 2, 16: 1, 32: 1}  # transformers is ~10x slower; fewer rounds keep the run short
# Open-ended prompts whose greedy continuations run past MAX_TOKENS (checked in the table:
# tokens_per_request), so every system does the same amount of work per request.
PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The history of the printing press begins",
    "In the year 2150, the first city on Mars",
    "The old lighthouse keeper looked out at the storm and",
    "Chapter 1\n\nThe rain had not stopped for three days when",
    "The following is a long essay about the ocean.\n\nThe ocean",
    "The mountain trail wound upward through the pines, and",
    "My grandfather used to tell me stories about the war. He said",
]


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {datetime.date.today().isoformat()}"


def scheduler_probe(mesh):
    """Decode steps and sequences advanced so far (guardmesh's scheduler metrics)."""

    def probe() -> dict:
        return {
            "steps": mesh.generation_metric("generation_decode_batch_size_count"),
            "rows": mesh.generation_metric("generation_decode_batch_size_sum"),
        }

    return probe


def sweep_http(
    url: str, headers: dict, model: str, extra_body: dict | None = None, probe=None, meter=None
) -> list[dict]:
    async def run():
        # warm-up: a few concurrent requests (allocations, caches, connection set-up)
        await peers.measure_openai_stream(url, headers, model, PROMPTS, 4, 1, 16, extra_body)
        out = []
        for c in CONCURRENCIES:
            await asyncio.to_thread(peers.wait_for_quiet)
            before = probe() if probe else None
            with meter() as cpu:
                out.append(
                    await peers.measure_openai_stream(
                        url, headers, model, PROMPTS, c, ROUNDS[c], MAX_TOKENS, extra_body
                    )
                )
            out[-1]["cpu"] = cpu.result
            if probe:
                after = probe()
                steps = after["steps"] - before["steps"]
                out[-1]["decode_steps"] = steps
                out[-1]["mean_decode_batch"] = (after["rows"] - before["rows"]) / max(steps, 1)
                out[-1]["decode_steps_per_s"] = steps / out[-1]["wall_s"]
            print(f"  c={c}: {out[-1]['tokens_per_s']:.1f} tok/s, ttft p50 {out[-1]['ttft_ms_p50']:.0f} ms", flush=True)
        return out

    return asyncio.run(run())


def test_generation_concurrency_vs_peers(mesh):
    try:
        peers.ensure_bench_venv()
        peers.ensure_build_venv()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        pytest.skip(f"peer environments unavailable: {e}")

    systems: dict[str, list[dict]] = {}

    # 1. guardmesh through the gateway (the peers are not running).
    print("\nguardmesh (gateway, streamed)", flush=True)
    systems["guardmesh"] = sweep_http(
        f"{mesh.base_url}/completions",
        mesh.headers(),
        MODEL,
        {"stream_options": {"include_usage": True}},
        probe=scheduler_probe(mesh),
        meter=lambda: peers.CpuMeter(str(mesh.run_dir)),
    )

    # 2. llama-cpp-python server (guardmesh idle).
    print("llama-cpp-python server", flush=True)
    with peers.LlamaCppServer(threads=2) as server:
        systems["llama-cpp-python"] = sweep_http(
            f"{server.base_url}/completions",
            {},
            MODEL,
            meter=lambda: peers.CpuMeter(own_pids={"llama-cpp-server": server.process.pid}),
        )

    # 3. transformers generate() (both servers idle / stopped).
    print("transformers generate()", flush=True)
    peers.wait_for_quiet()
    with peers.CpuMeter() as cpu:  # "client" includes the finished generate() subprocess
        hf = peers.run_transformers(PROMPTS, CONCURRENCIES, HF_ROUNDS, MAX_TOKENS, threads=2)
    systems["transformers"] = hf["sweep"]

    cols = [
        "system",
        "concurrency",
        "requests",
        "tokens_per_request",
        "tokens_per_s",
        "ttft_ms_p50",
        "ttft_ms_p95",
        "itl_ms_p50",
        "itl_ms_p95",
        "chunk_gap_ms_p95",
        "foreign_cores",
    ]
    for s in systems["transformers"]:
        s["cpu"] = {"cores_by_role": {"foreign": cpu.result["cores_by_role"].get("foreign", float("nan"))}}
    rows = [
        [name, *(s[c] for c in cols[1:-1]), s["cpu"]["cores_by_role"].get("foreign", 0.0)]
        for name, sweep in systems.items()
        for s in sweep
    ]

    gm = {s["concurrency"]: s for s in systems["guardmesh"]}
    lc = {s["concurrency"]: s for s in systems["llama-cpp-python"]}
    targets = {
        "c16_tokens_per_s_ratio_vs_llama_cpp": gm[16]["tokens_per_s"] / lc[16]["tokens_per_s"],
        "c16_tokens_per_s_at_least_5x": gm[16]["tokens_per_s"] >= 5 * lc[16]["tokens_per_s"],
        "c16_ttft_p50_ms": gm[16]["ttft_ms_p50"],
        "c16_ttft_p50_under_1s": gm[16]["ttft_ms_p50"] < 1000,
        "c1_itl_p50_ms": {"guardmesh": gm[1]["itl_ms_p50"], "llama-cpp-python": lc[1]["itl_ms_p50"]},
        "c1_itl_no_worse_than_llama_cpp": gm[1]["itl_ms_p50"] <= lc[1]["itl_ms_p50"],
    }
    json_path = report(
        "generation_concurrency",
        f"streamed generation vs concurrency, {MAX_TOKENS} greedy tokens/request, each system alone",
        cols,
        rows,
        {
            "machine": machine(),
            "max_tokens": MAX_TOKENS,
            "concurrencies": CONCURRENCIES,
            "rounds": ROUNDS,
            "transformers_rounds": HF_ROUNDS,
            "systems": systems,
            "targets": targets,
            "transformers_cpu": cpu.result,
            "peers": {
                "llama-cpp-python": peers.BENCH_REQUIREMENTS[0],
                "transformers": hf["transformers"],
                "torch": hf["torch"],
            },
            "notes": "TTFT = request sent -> first text chunk; ITL per request = (last - first token) / "
            "(tokens - 1); transformers: batch = concurrency, TTFT = first decoding step of the batch.",
        },
    )
    for k, v in targets.items():
        print(f"target {k}: {v}")
    png = RESULTS / "generation_concurrency.png"
    peers.plot_with_bench_venv(json_path, png)
    print(f"-> {png}")

    for name, sweep in systems.items():
        for s in sweep:
            assert s["tokens"] > 0 and s["ttft_ms_p50"] > 0, (name, s)
