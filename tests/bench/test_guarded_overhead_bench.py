"""What the guards cost: a fully guarded completion vs the same completion unguarded.

Through the gateway (Envoy → orchestrator → checks + Triton), non-streamed, concurrency 1,
32 greedy tokens. Four variants of the same request run interleaved (round-robin, the
order rotating each round) so machine noise hits them alike:

- unguarded:  no checks;
- input:      `input.pii = "replace"` + `input.block_prompt_injection` (run concurrently);
- output:     `output.toxicity` + `output.factuality` (one batched call each, after generation);
- full:       all four.

The prompt (the first of CANDIDATES that qualifies) has no PII and passes every check,
so every variant generates the very same 32 tokens (asserted) and the latency
differences are the checks alone. Added latency is
reported two ways: p50/p95 of a variant minus p50/p95 of `unguarded`, and p50/p95 of the
per-round paired differences. Target (issue 7): full guard adds at most 25 ms at p50.
"""

import time

import httpx
from benchlib import median, percentile, report

MODEL = "SmolLM2-135M-Instruct"
MAX_TOKENS = 32
ROUNDS = 30
TARGET_P50_MS = 25.0
# The first candidate whose greedy completion passes every check (factuality takes the
# prompt as its reference, so the completion must stay on the prompt's facts) is used.
CANDIDATES = [
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, Monday, Tuesday, Wednesday,",
    "January, February, March, April, May, June, July, August, September, October, November, "
    "December, January, February,",
    "red, green, blue, red, green, blue, red, green, blue, red, green, blue, red, green,",
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It was built by Gustave Eiffel's company and completed in 1889 for the World's Fair. "
    "The Eiffel Tower is",
]
VARIANTS = {
    "unguarded": {},
    "input": {"input": {"pii": "replace", "pii_replace_method": "random", "block_prompt_injection": True}},
    "output": {"output": {"toxicity": True, "factuality": True}},
    "full": {
        "input": {"pii": "replace", "pii_replace_method": "random", "block_prompt_injection": True},
        "output": {"toxicity": True, "factuality": True},
    },
}


def one(client: httpx.Client, mesh, extra: dict, prompt: str, check: bool = True) -> tuple[float, str, int]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, **extra}
    start = time.perf_counter()
    r = client.post(f"{mesh.base_url}/completions", json=body, headers=mesh.headers())
    elapsed = (time.perf_counter() - start) * 1000
    if not check and r.status_code != 200:
        return elapsed, r.text, -1
    assert r.status_code == 200, r.text
    data = r.json()
    return elapsed, data["choices"][0]["text"], data["usage"]["completion_tokens"]


def test_guarded_vs_unguarded_latency(mesh):
    names = list(VARIANTS)
    samples: dict[str, list[float]] = {n: [] for n in names}
    texts: dict[str, set[str]] = {n: set() for n in names}
    with httpx.Client(timeout=60) as client:
        prompt, tried = None, []
        for candidate in CANDIDATES:
            plain = one(client, mesh, VARIANTS["unguarded"], candidate)
            guarded = one(client, mesh, VARIANTS["full"], candidate, check=False)
            tried.append((candidate[:40], plain[1:], guarded[1:]))
            if guarded[2] == MAX_TOKENS and guarded[1] == plain[1]:
                prompt = candidate
                break
        assert prompt is not None, f"no candidate prompt passes every check with a full-length completion: {tried}"
        for _ in range(3):  # warm every path (check models, connections)
            for n in names:
                one(client, mesh, VARIANTS[n], prompt)
        for i in range(ROUNDS):
            order = names[i % len(names) :] + names[: i % len(names)]
            for n in order:
                ms, text, tokens = one(client, mesh, VARIANTS[n], prompt)
                assert tokens == MAX_TOKENS, (n, tokens, text)
                samples[n].append(ms)
                texts[n].add(text)
    assert len(set().union(*texts.values())) == 1, texts  # same completion everywhere

    base = samples["unguarded"]
    rows, stats = [], {}
    for n in names:
        s = samples[n]
        paired = [a - b for a, b in zip(s, base, strict=True)]
        stats[n] = {
            "latency_ms_p50": median(s),
            "latency_ms_p95": percentile(s, 95),
            "added_ms_p50": median(s) - median(base),
            "added_ms_p95": percentile(s, 95) - percentile(base, 95),
            "paired_added_ms_p50": median(paired),
            "paired_added_ms_p95": percentile(paired, 95),
        }
        rows.append([n, *stats[n].values()])
    full = stats["full"]
    report(
        "guarded_overhead",
        f"guarded vs unguarded /completions through the gateway, {MAX_TOKENS} greedy tokens, "
        f"{ROUNDS} interleaved rounds, concurrency 1 (ms)",
        ["variant", *next(iter(stats.values())).keys()],
        rows,
        {
            "stats": stats,
            "samples_ms": samples,
            "target_p50_ms": TARGET_P50_MS,
            "target_met": full["added_ms_p50"] <= TARGET_P50_MS,
            "prompt": prompt,
            "completion": texts["full"].pop(),
        },
    )
    print(
        f"target: full guard adds {full['added_ms_p50']:.1f} ms at p50 (<= {TARGET_P50_MS} ms: "
        f"{full['added_ms_p50'] <= TARGET_P50_MS})"
    )
