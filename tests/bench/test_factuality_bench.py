"""Factuality benchmark: latency, batched vs one-at-a-time throughput, and accuracy.

Quality is measured on tests/data/factuality_eval.jsonl (hand-written); the scoring parameters and
the threshold were chosen on the separate tests/data/factuality_dev.jsonl, reported alongside.
The baseline is the same embeddings without the fact and negation checks. Prints a table and
writes tests/bench/results/factuality.json.
"""

import json
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common.embedding import MiniLMEmbedder
from factuality.scorer import EmbeddingScorer, Pair, ScoringParams

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tests/bench/results"
THRESHOLD = 0.5


def _load(name: str) -> tuple[list[Pair], np.ndarray]:
    rows = [json.loads(line) for line in (REPO / "tests/data" / name).read_text().splitlines()]
    return [Pair(r["reference"], r["text"]) for r in rows], np.array([r["label"] == "supported" for r in rows])


def _quality(scorer: EmbeddingScorer, pairs: list[Pair], y: np.ndarray) -> dict[str, float]:
    s = np.array(scorer.score(pairs))
    predicted = s >= THRESHOLD
    return {
        "roc_auc": round(float(roc_auc_score(y, s)), 4),
        "accuracy": round(float((predicted == y).mean()), 4),
        "supported_passed": round(float(predicted[y].mean()), 4),
        "unsupported_failed": round(float((~predicted[~y]).mean()), 4),
    }


def test_factuality_bench():
    embedder = MiniLMEmbedder()
    full = EmbeddingScorer(embedder)
    baseline = EmbeddingScorer(embedder, ScoringParams(fact_penalty=1.0, negation_penalty=1.0))
    eval_pairs, eval_y = _load("factuality_eval.jsonl")
    dev_pairs, dev_y = _load("factuality_dev.jsonl")
    full.score(eval_pairs[:4])  # warm

    short = Pair(
        "The Eiffel Tower in Paris was completed in 1889.",
        "The Eiffel Tower was completed in 1889.",
    )
    latencies = []
    for _ in range(60):
        t = time.perf_counter()
        full.score([short])
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]

    sample = eval_pairs[:64]
    t = time.perf_counter()
    for pair in sample:
        full.score([pair])
    single_s = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, len(sample), 16):
        full.score(sample[start : start + 16])
    batched_s = time.perf_counter() - t

    quality = {
        "eval": {
            "embedding_only": _quality(baseline, eval_pairs, eval_y),
            "full": _quality(full, eval_pairs, eval_y),
        },
        "dev": {
            "embedding_only": _quality(baseline, dev_pairs, dev_y),
            "full": _quality(full, dev_pairs, dev_y),
        },
    }
    result = {
        "latency_ms_one_short_pair": {"p50": round(p50, 2), "p95": round(p95, 2)},
        "throughput_pairs_per_s": {
            "one_at_a_time": round(len(sample) / single_s, 1),
            "batched_16": round(len(sample) / batched_s, 1),
            "speedup": round(single_s / batched_s, 2),
        },
        f"quality_at_{THRESHOLD}": quality,
        "sets": {"eval": len(eval_pairs), "dev": len(dev_pairs)},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "factuality.json").write_text(json.dumps(result, indent=2))

    print(f"\nfactuality latency, one short pair: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    tp = result["throughput_pairs_per_s"]
    print(
        f"throughput: one-at-a-time {tp['one_at_a_time']} pairs/s, "
        f"batched(16) {tp['batched_16']} pairs/s, "
        f"x{tp['speedup']}"
    )
    print(f"\n{'set / scorer':<26}{'ROC-AUC':>9}{'acc@' + str(THRESHOLD):>9}{'sup. pass':>11}{'unsup. fail':>13}")
    for split, by in quality.items():
        for name, q in by.items():
            print(
                f"{split + ' / ' + name:<26}{q['roc_auc']:>9.3f}{q['accuracy']:>9.3f}"
                f"{q['supported_passed']:>11.3f}{q['unsupported_failed']:>13.3f}"
            )
    assert quality["eval"]["full"]["accuracy"] > quality["eval"]["embedding_only"]["accuracy"]
