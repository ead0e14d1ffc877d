"""Soak: minutes of mixed load through the gateway; latency per minute, memory and file
descriptors per process at start and end, and no 5xx. `make soak` (SOAK_MINUTES, default 10)."""

import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from benchlib import percentile, report  # noqa: E402

MODEL = "SmolLM2-135M-Instruct"
CONCURRENCY = 6
PROCESSES = ["gateway", "orchestrator", "generation", "pii", "injection", "toxicity", "factuality"]

REQUESTS = [
    ("/completions", {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 16}),
    ("/completions", {"model": MODEL, "prompt": ["One, two,", "Red, green,"], "max_tokens": 8}),
    ("/completions", {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 24, "stream": True}),
    (
        "/completions",
        {
            "model": MODEL,
            "prompt": "Email jane@example.com about it",
            "max_tokens": 8,
            "input": {"pii": "replace", "block_prompt_injection": True},
        },
    ),
    (
        "/completions",
        {
            "model": MODEL,
            "prompt": "Water boils at 100 degrees Celsius. Water boils at",
            "max_tokens": 6,
            "temperature": 0,
            "output": {"toxicity": True, "factuality": True},
        },
    ),
    ("/toxicity", {"text": "have a lovely day"}),
    ("/PII", {"prompt": "call 212-555-0148 now", "replace": True}),
]


def process_stats(mesh, name: str) -> dict:
    """RSS and its private part (MiB), and open file descriptors, of a supervised process
    and its children. RSS also counts file pages mapped in: model weights ONNX Runtime maps
    from disk and touches gradually (an embedding row the first time its token comes up),
    which grows toward the file's size and is reclaimable; a leak shows in private memory."""
    pid = int(mesh.supervisorctl("pid", name))
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    kib = {"VmRSS": 0, "RssAnon": 0}
    fds = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                key = line.split(":", 1)[0]
                if key in kib:
                    kib[key] += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except FileNotFoundError:
            pass
    return {
        "pid": pid,
        "rss_mib": round(kib["VmRSS"] / 1024, 1),
        "private_mib": round(kib["RssAnon"] / 1024, 1),
        "fds": fds,
    }


def test_soak(mesh):
    minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    # Warm every path once, then take the baseline.
    with httpx.Client(base_url=mesh.base_url, timeout=60, headers=mesh.headers("gm-test-load")) as client:
        for path, body in REQUESTS:
            client.post(path, json=body).read()
    start_stats = {name: process_stats(mesh, name) for name in PROCESSES}
    samples: list[tuple[float, float, int]] = []  # (finished at, seconds, status)
    stop = threading.Event()
    began = time.monotonic()

    def worker(offset: int) -> None:
        i = offset
        with httpx.Client(base_url=mesh.base_url, timeout=120, headers=mesh.headers("gm-test-load")) as client:
            while not stop.is_set():
                path, body = REQUESTS[i % len(REQUESTS)]
                i += 1
                t = time.monotonic()
                with client.stream("POST", path, json=body) as r:
                    r.read()
                samples.append((time.monotonic() - began, time.monotonic() - t, r.status_code))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CONCURRENCY)]
    for t in threads:
        t.start()
    # Memory every minute: allocators and caches grow while warming up, a leak keeps growing.
    by_minute = {name: [] for name in PROCESSES}
    for _ in range(int(-(-minutes // 1))):
        time.sleep(min(60, minutes * 60))
        for name in PROCESSES:
            by_minute[name].append(process_stats(mesh, name))
    stop.set()
    for t in threads:
        t.join(150)
    end_stats = {name: process_stats(mesh, name) for name in PROCESSES}

    rows = []
    for minute in range(int(-(-minutes // 1))):
        lat = [s[1] * 1000 for s in samples if minute * 60 <= s[0] < (minute + 1) * 60]
        codes = [s[2] for s in samples if minute * 60 <= s[0] < (minute + 1) * 60]
        rows.append(
            [
                minute + 1,
                len(lat),
                percentile(lat, 50),
                percentile(lat, 95),
                percentile(lat, 99),
                sum(c >= 500 for c in codes),
                sum(400 <= c < 500 for c in codes),
            ]
        )
    report(
        "soak_latency",
        f"soak: {minutes:g} min, concurrency {CONCURRENCY}, mixed workload",
        ["minute", "requests", "p50_ms", "p95_ms", "p99_ms", "5xx", "4xx"],
        rows,
    )
    half = len(by_minute[PROCESSES[0]]) // 2
    proc_rows = [
        [
            n,
            start_stats[n]["rss_mib"],
            end_stats[n]["rss_mib"],
            start_stats[n]["private_mib"],
            by_minute[n][max(half - 1, 0)]["private_mib"],
            end_stats[n]["private_mib"],
            start_stats[n]["fds"],
            end_stats[n]["fds"],
            start_stats[n]["pid"] == end_stats[n]["pid"],
        ]
        for n in PROCESSES
    ]
    report(
        "soak_processes",
        "soak: memory and file descriptors per process (with children)",
        [
            "process",
            "rss_start_mib",
            "rss_end_mib",
            "private_start_mib",
            "private_half_mib",
            "private_end_mib",
            "fds_start",
            "fds_end",
            "same_pid",
        ],
        proc_rows,
        {"start": start_stats, "end": end_stats, "by_minute": by_minute},
    )
    print(json.dumps({"requests": len(samples)}))
    assert samples and all(code < 500 for _, _, code in samples)
    assert all(row[-1] for row in proc_rows), "a process restarted during the soak"
    for name, _, _, _, private_half, private_end, fd0, fd1, _ in proc_rows:
        # After the first half (warm-up: ONNX Runtime's arena, caches), memory must stay flat.
        assert private_end < private_half * 1.05 + 20, (
            f"{name}: memory kept growing, {private_half} -> {private_end} MiB"
        )
        assert fd1 <= fd0 + 20, f"{name}: file descriptors grew from {fd0} to {fd1}"
