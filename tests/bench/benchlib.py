"""Shared helpers of the benchmarks: percentiles and the table + JSON report."""

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(name: str, title: str, columns: list[str], rows: list[list], extra: dict | None = None) -> Path:
    """Prints a table and writes it (plus `extra`) as JSON under tests/bench/results/."""
    widths = [max(len(str(c)), *(len(_fmt(r[i])) for r in rows)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(_fmt(v).ljust(w) for v, w in zip(r, widths, strict=True)))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"title": title, "columns": columns, "rows": rows, **(extra or {})}, indent=2))
    print(f"-> {path}")
    return path


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
