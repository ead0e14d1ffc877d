"""Weight format of the generation model, from measurements: fp32 (the baseline) vs int8
(what `make models` serves) vs int4 (the builder's MatMulNBits re-quantisation).

Each format is built by `services/generation/convert.py --precision P` in `.venv-build`
(cached next to the served model) and run in this process through the service's own
`OnnxCausalLM` with 2 intra-op threads. Per format:

- size on disk (model.onnx + external data) and bytes read per decode step;
- decode step time and tokens/s at batch 1 and 16 (the service's steady state);
- perplexity on tests/data/perplexity.txt (fixed text, scored token by token);
- greedy agreement with fp32: 8 prompts x 32 greedy tokens, the share of tokens equal
  to fp32's before the first divergence, and how many of the 8 texts are identical.

It also states the machine's physical limits for a decode step: weight bytes read per
step against measured memory bandwidth (a numpy copy), and FLOPs at batch B against a
measured fp32 matmul peak, with how close each format gets.
"""

import json
import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from benchlib import report

from generation.onnx_model import OnnxCausalLM
from generation.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[2]
MODELS = Path.home() / ".cache" / "guardmesh" / "models"
BUILD_PY = REPO / ".venv-build" / "bin" / "python"
FORMATS = ["fp32", "int8", "int4"]
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "Water boils at",
    "The three primary colors are",
    "To make a cup of tea, first",
    "def fibonacci(n):",
    "The largest planet in the solar system is",
    "My favourite season is autumn because",
]
GREEDY_TOKENS = 32
THREADS = 2


def model_dir(precision: str) -> Path:
    """The served int8 model is `make models`' own; the others are built here on first use."""
    if precision == "int8":
        return Path(os.environ.get("GUARDMESH_MODEL_DIR", MODELS / "smollm2-135m-instruct-int8"))
    out = MODELS / f"smollm2-135m-instruct-{precision}"
    if not (out / "provenance.json").exists():
        if not BUILD_PY.exists():
            pytest.skip(f"{BUILD_PY} missing: run `make models` first")
        convert = REPO / "services" / "generation" / "convert.py"
        subprocess.run([str(BUILD_PY), str(convert), "--precision", precision, "--out", str(out)], check=True)
    return out


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.glob("model.onnx*")) / 1e6


# Bytes a decode step reads: every initializer, except tables only looked up by Gather (the
# int8 export keeps the fp32 embedding table for lookups and an int8 copy as the LM head;
# a lookup reads B rows). Runs in .venv-build, which has `onnx`.
BYTES_READ = """
import json, sys
import onnx
graph = onnx.load(sys.argv[1], load_external_data=False).graph
lookups = ("Gather", "GatherBlockQuantized")
looked_up = {n.input[0] for n in graph.node if n.op_type in lookups}
elsewhere = {i for n in graph.node if n.op_type not in lookups for i in n.input}
def nbytes(t):
    ext = {e.key: e.value for e in t.external_data}
    return int(ext["length"]) if "length" in ext else len(t.raw_data)
print(sum(nbytes(t) for t in graph.initializer if t.name not in looked_up or t.name in elsewhere))
"""


def bytes_read_per_step(path: Path) -> int:
    out = subprocess.run([str(BUILD_PY), "-c", BYTES_READ, str(path / "model.onnx")], check=True, capture_output=True)
    return int(out.stdout)


def decode_ms(lm: OnnxCausalLM, batch: int, steps: int = 20) -> float:
    lm.release_all()
    for slot in range(batch):
        lm.prefill(slot, list(range(100, 150)))
    slots, tokens = list(range(batch)), [100] * batch
    for _ in range(3):
        lm.decode(slots, tokens)
    started = time.perf_counter()
    for _ in range(steps):
        lm.decode(slots, tokens)
    return (time.perf_counter() - started) / steps * 1e3


def perplexity(lm: OnnxCausalLM, ids: list[int]) -> float:
    lm.release_all()
    logits = lm.prefill(0, ids[:1])
    nll = 0.0
    for nxt in ids[1:]:
        z = logits.astype(np.float64)
        nll -= z[nxt] - (z.max() + math.log(np.exp(z - z.max()).sum()))
        logits = lm.decode([0], [nxt])[0]
    return math.exp(nll / (len(ids) - 1))


def greedy(lm: OnnxCausalLM, prompt_ids: list[int]) -> list[int]:
    lm.release_all()
    out = [int(np.argmax(lm.prefill(0, prompt_ids)))]
    for _ in range(GREEDY_TOKENS - 1):
        out.append(int(np.argmax(lm.decode([0], [out[-1]])[0])))
    return out


def agreement(a: list[int], b: list[int]) -> int:
    """Tokens equal before the first divergence."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def memory_bandwidth_gbs() -> float:
    """Read + write bytes per second of a large numpy copy (best of 5)."""
    src = np.ones(64 * 2**20, dtype=np.float32)  # 256 MiB
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - started)
    return 2 * src.nbytes / best / 1e9


def matmul_gflops() -> float:
    """fp32 GEMM throughput of this machine's BLAS (best of 5), a compute ceiling."""
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * 1024**3 / best / 1e9


def test_weight_formats():
    tokenizer = Tokenizer(model_dir("int8"))
    text_ids = tokenizer.encode((REPO / "tests" / "data" / "perplexity.txt").read_text())[:384]
    prompt_ids = [tokenizer.encode(p) for p in PROMPTS]
    bandwidth, gflops = memory_bandwidth_gbs(), matmul_gflops()
    info = json.loads((model_dir("int8") / "model_info.json").read_text())

    results, greedy_fp32 = {}, None
    for precision in FORMATS:
        path = model_dir(precision)
        lm = OnnxCausalLM(path, intra_op_threads=THREADS, max_batch=16, max_len=1024)
        texts = [greedy(lm, ids) for ids in prompt_ids]
        if greedy_fp32 is None:
            greedy_fp32 = texts
        agree = [agreement(t, f) for t, f in zip(texts, greedy_fp32, strict=True)]
        results[precision] = {
            "size_mb": round(size_mb(path), 1),
            "read_per_step_mb": round(bytes_read_per_step(path) / 1e6, 1),
            "decode_ms_b1": round(decode_ms(lm, 1), 2),
            "decode_ms_b16": round(decode_ms(lm, 16), 2),
            "perplexity": round(perplexity(lm, text_ids), 3),
            "greedy_token_agreement": round(sum(agree) / (GREEDY_TOKENS * len(PROMPTS)), 3),
            "greedy_identical_texts": sum(a == GREEDY_TOKENS for a in agree),
        }
        del lm

    # Physical limits per decode step. Bytes: every weight is read once per step (see
    # BYTES_READ; the KV cache adds little at these short contexts). FLOPs: 2 per weight per
    # token, all layers plus the LM head.
    hidden, kv, ffn = 576, info["num_key_value_heads"] * info["head_dim"], 1536  # SmolLM2-135M
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * ffn  # q, o; k, v; gate, up, down
    lm_head = info["vocab_size"] * hidden
    flops_per_token = 2 * (info["num_hidden_layers"] * per_layer + lm_head)
    rows = []
    for precision, r in results.items():
        weight_bytes = r["read_per_step_mb"] * 1e6
        for batch, ms in ((1, r["decode_ms_b1"]), (16, r["decode_ms_b16"])):
            bw_floor_ms = weight_bytes / (bandwidth * 1e9) * 1e3
            flop_floor_ms = flops_per_token * batch / (gflops * 1e9) * 1e3
            r[f"tokens_per_s_b{batch}"] = round(batch / ms * 1e3, 1)
            r[f"bandwidth_floor_ms_b{batch}"] = round(bw_floor_ms, 2)
            r[f"flop_floor_ms_b{batch}"] = round(flop_floor_ms, 2)
            r[f"of_limit_b{batch}"] = round(max(bw_floor_ms, flop_floor_ms) / ms, 3)
        rows.append(
            [
                precision,
                r["size_mb"],
                r["read_per_step_mb"],
                r["decode_ms_b1"],
                r["tokens_per_s_b1"],
                r["decode_ms_b16"],
                r["tokens_per_s_b16"],
                r["of_limit_b1"],
                r["of_limit_b16"],
                r["perplexity"],
                r["greedy_token_agreement"],
                f"{r['greedy_identical_texts']}/{len(PROMPTS)}",
            ]
        )
    report(
        "weight_formats",
        f"weight formats (baseline fp32; {THREADS} threads; memory bandwidth {bandwidth:.1f} GB/s, "
        f"fp32 GEMM {gflops:.0f} GFLOP/s; {flops_per_token / 1e9:.2f} GFLOP per token, LM head {lm_head / 1e6:.1f}M)",
        [
            "format",
            "size MB",
            "read/step MB",
            "step ms b1",
            "tok/s b1",
            "step ms b16",
            "tok/s b16",
            "of limit b1",
            "of limit b16",
            "perplexity",
            "greedy agree",
            "same text",
        ],
        rows,
        {"formats": results, "memory_bandwidth_gbs": bandwidth, "fp32_gemm_gflops": gflops},
    )
    # A sanity floor, not a target: every format must still be a language model.
    assert all(r["perplexity"] < 100 for r in results.values()), results
