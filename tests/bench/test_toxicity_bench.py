"""Toxicity benchmark: latency, batched vs one-at-a-time throughput, and quality per category.

Quality is measured on tests/data/toxicity_eval.jsonl (hand-written; the head is trained on the
separate tests/data/toxicity_train.jsonl). Prints tables and writes
tests/bench/results/toxicity.json.
"""

import json
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from toxicity.classifier import HEAD_FILE, CombinedClassifier

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tests/bench/results"
THRESHOLD = 0.5
NEGATIVE = ("benign", "benign_tricky")


@pytest.fixture(scope="module")
def toxicity_model_dir(tmp_path_factory) -> Path:
    """The built head (make models), else one trained now from the training set."""
    built = Path.home() / ".cache/guardmesh/models/toxicity"
    if (built / HEAD_FILE).is_file():
        return built
    from toxicity import train

    out = tmp_path_factory.mktemp("toxicity-model") / "toxicity"
    assert train.main(["--out", str(out)]) == 0
    return out


def _per_category_auc(scores: np.ndarray, rows: list[dict]) -> dict[str, float]:
    y = np.array([r["label"] for r in rows])
    cats = np.array([r["category"] for r in rows])
    out = {"overall": roc_auc_score(y, scores)}
    for c in sorted(set(cats)):
        # a toxic category against every benign text; a benign category against every toxic text
        keep = (cats == c) | ((y == 1) if c in NEGATIVE else (y == 0))
        out[c] = roc_auc_score(y[keep], scores[keep])
    return out


def _at_threshold(scores: np.ndarray, rows: list[dict]) -> dict[str, float]:
    out = {}
    for c in sorted({r["category"] for r in rows}):
        s = np.array([x for x, r in zip(scores, rows, strict=True) if r["category"] == c])
        # share flagged: detection rate for toxic categories, false-positive rate for benign
        out[c] = float((s > THRESHOLD).mean())
    y = np.array([r["label"] for r in rows])
    out["accuracy"] = float(((scores > THRESHOLD) == (y == 1)).mean())
    return out


def test_toxicity_bench(toxicity_model_dir):
    rows = [json.loads(line) for line in (REPO / "tests/data/toxicity_eval.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    clf = CombinedClassifier.load(toxicity_model_dir)
    clf.score(texts[:8])  # warm

    latencies = []
    for i in range(60):
        t = time.perf_counter()
        clf.score([texts[i % len(texts)]])
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]

    sample = texts[:128]
    t = time.perf_counter()
    for text in sample:
        clf.score([text])
    single_s = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, len(sample), 32):
        clf.score(sample[start : start + 32])
    batched_s = time.perf_counter() - t

    combined = np.array(clf.score(texts))
    profanity = np.array(clf.profanity_only(texts))
    auc = {
        "profanity_only": _per_category_auc(profanity, rows),
        "combined": _per_category_auc(combined, rows),
    }
    rates = {
        "profanity_only": _at_threshold(profanity, rows),
        "combined": _at_threshold(combined, rows),
    }
    result = {
        "latency_ms_one_short_text": {"p50": round(p50, 2), "p95": round(p95, 2)},
        "throughput_texts_per_s": {
            "one_at_a_time": round(len(sample) / single_s, 1),
            "batched_32": round(len(sample) / batched_s, 1),
            "speedup": round(single_s / batched_s, 2),
        },
        "roc_auc": {k: {c: round(v, 4) for c, v in d.items()} for k, d in auc.items()},
        f"flagged_share_at_{THRESHOLD}": {k: {c: round(v, 3) for c, v in d.items()} for k, d in rates.items()},
        "eval_set": {"file": "tests/data/toxicity_eval.jsonl", "n": len(rows)},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "toxicity.json").write_text(json.dumps(result, indent=2))

    print(f"\ntoxicity latency, one short text: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    tp = result["throughput_texts_per_s"]
    print(
        f"throughput: one-at-a-time {tp['one_at_a_time']} texts/s, "
        f"batched(32) {tp['batched_32']} texts/s, "
        f"x{tp['speedup']}"
    )
    print(f"\n{'category':<16}{'AUC prof.':>10}{'AUC comb.':>10}{'flag prof.':>11}{'flag comb.':>11}")
    for c in auc["combined"]:
        pr, co = rates["profanity_only"].get(c), rates["combined"].get(c)
        flags = f"{pr:>11.2f}{co:>11.2f}" if pr is not None else f"{'':>11}{'':>11}"
        print(f"{c:<16}{auc['profanity_only'][c]:>10.3f}{auc['combined'][c]:>10.3f}{flags}")
    print(f"{'accuracy':<16}{'':>20}{rates['profanity_only']['accuracy']:>11.3f}{rates['combined']['accuracy']:>11.3f}")
    print(f"(flag = share scored over {THRESHOLD}: detection rate for toxic rows, false-positive rate for benign rows)")
    assert auc["combined"]["overall"] > auc["profanity_only"]["overall"]
