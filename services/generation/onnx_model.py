"""Run-time causal LM on ONNX Runtime with a slot-based, copy-free KV cache.

The model is the onnxruntime-genai export built by `convert.py` (`make models`): a decoder
with `GroupQueryAttention` whose inputs are `input_ids` [B, S], `attention_mask`
[B, total_len] and `past_key_values.{i}.{key,value}` [B, kv_heads, past_len, head_dim], and
whose outputs are `logits` and `present.{i}.{key,value}`. `convert.py` slices the hidden
state before the LM head, so `logits` is [B, 1, vocab] (last position only), which lets
every run write its logits into one preallocated buffer.

KV cache: one buffer per layer and per key/value of shape
[max_batch, kv_heads, max_len, head_dim] is allocated once. Through `IOBinding` the same
memory is bound as both the `past_key_values.*` input and the `present.*` output; GQA then
runs in "shared buffer" mode and writes each new position in place, so nothing is copied
between steps. Each row of the buffers is a *slot* (one sequence). Because the batch axis is
outermost, the rows [a:b] of a buffer are one contiguous block, so a run over slots a..b-1
simply binds a pointer offset into the buffer.

GQA takes each row's sequence length from the number of ones in its attention-mask row
(the new tokens are written at positions `sum(mask) - S .. sum(mask) - 1`), so masks are
RIGHT-padded: ones for valid positions, then zeros. Left padding gives wrong logits.

Run time needs only onnxruntime + numpy (no torch, no transformers). Not thread-safe: one
scheduler thread drives an instance.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

MODEL_FILE = "model.onnx"
DEFAULT_SUBDIR = "smollm2-135m-instruct-int8"

_PAST_RE = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")

# onnxruntime provider name -> OrtValue device type string.
_DEVICE_OF_PROVIDER = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
}


def default_model_dir() -> Path:
    """`$GUARDMESH_MODEL_DIR` or ~/.cache/guardmesh/models/smollm2-135m-instruct-int8."""
    env = os.environ.get("GUARDMESH_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "guardmesh" / "models" / DEFAULT_SUBDIR


class OnnxCausalLM:
    """A decoder-only LM with `max_batch` sequence slots of up to `max_len` tokens each.

    Typical use by a continuous-batching scheduler (single thread):

        logits = lm.prefill(slot, prompt_ids)          # [vocab], last prompt position
        logits = lm.decode([s0, s1, ...], [t0, t1, ...])  # [len(slots), vocab]
        lm.release(slot)                               # slot can take a new sequence
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        providers: Sequence[str] | str = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
        max_batch: int = 16,
        max_len: int = 2048,
        prefill_chunk: int = 512,
        device_id: int = 0,
    ) -> None:
        """
        Args:
            model_dir: converted model dir (default: `default_model_dir()`).
            providers: ORT execution providers, e.g. "CUDAExecutionProvider" (CPU is
                appended as a fallback for ops the first provider lacks). The KV buffers
                live on the first provider's device.
            intra_op_threads: ORT intra-op threads (0 = ORT default: all cores).
            max_batch: number of sequence slots.
            max_len: context length per slot (prompt + generated tokens).
            prefill_chunk: prompts longer than this run in equal chunks of at most this
                many tokens (bounds per-run activation memory; results are deterministic
                but not bit-identical across different chunkings).
            device_id: GPU ordinal for CUDA.
        """
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        model_path = self.model_dir / MODEL_FILE
        if not model_path.is_file():
            raise FileNotFoundError(f"{model_path} not found (run `make models`)")
        if isinstance(providers, str):
            providers = [providers]
        providers = list(providers)
        if "CPUExecutionProvider" not in providers:
            providers.append("CPUExecutionProvider")
        device = _DEVICE_OF_PROVIDER.get(providers[0])
        if device is None:
            raise ValueError(f"unsupported execution provider {providers[0]!r}")
        if max_batch < 1 or max_len < 2 or prefill_chunk < 1:
            raise ValueError("max_batch >= 1, max_len >= 2 and prefill_chunk >= 1 required")

        so = ort.SessionOptions()
        if intra_op_threads:
            so.intra_op_num_threads = intra_op_threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(model_path), so, providers=providers)
        self.providers: list[str] = self._session.get_providers()
        if self.providers[0] != providers[0]:
            raise RuntimeError(
                f"execution provider {providers[0]} is not available "
                f"(onnxruntime offers {ort.get_available_providers()})"
            )
        self._device = device
        self._device_id = device_id if device != "cpu" else 0

        # Shapes come from the graph; symbolic dims (head_dim is "kv_cache_dim" in this
        # export) fall back to the builder's genai_config.json.
        past = {}
        for inp in self._session.get_inputs():
            m = _PAST_RE.match(inp.name)
            if m:
                past[(int(m.group(1)), m.group(2))] = inp
        if not past:
            raise RuntimeError("model has no past_key_values.* inputs")
        self.num_layers = max(layer for layer, _ in past) + 1
        shape0 = past[(0, "key")].shape
        cfg = self._read_json("genai_config.json").get("model", {}).get("decoder", {})
        self.kv_heads = self._dim(shape0[1], cfg.get("num_key_value_heads"), "kv heads")
        self.head_dim = self._dim(shape0[3], cfg.get("head_size"), "head dim")
        logits_out = next(o for o in self._session.get_outputs() if o.name == "logits")
        if logits_out.shape[1] != 1:
            raise RuntimeError(f"{model_path}: logits must be last-position only ([B, 1, vocab]); run `make models`")
        info = self._read_json("model_info.json")
        self.vocab_size: int = self._dim(logits_out.shape[2], info.get("vocab_size"), "vocab size")
        ctx = info.get("max_position_embeddings") or self._read_json("genai_config.json").get("model", {}).get(
            "context_length"
        )
        if ctx and max_len > int(ctx):
            raise ValueError(f"max_len {max_len} exceeds the model's context length {ctx}")
        self._kv_dtype = np.float16 if "float16" in past[(0, "key")].type else np.float32

        self.max_batch = max_batch
        self.max_len = max_len
        self.prefill_chunk = prefill_chunk
        self._lengths = np.zeros(max_batch, dtype=np.int64)  # valid positions per slot

        # One [max_batch, kv_heads, max_len, head_dim] buffer per (layer, key|value).
        shape = [max_batch, self.kv_heads, max_len, self.head_dim]
        self._kv: list[tuple[str, str, ort.OrtValue]] = []
        for layer in range(self.num_layers):
            for kind in ("key", "value"):
                buf = ort.OrtValue.ortvalue_from_shape_and_type(shape, self._kv_dtype, device, self._device_id)
                self._kv.append((f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}", buf))
        self._row_bytes = self.kv_heads * max_len * self.head_dim * np.dtype(self._kv_dtype).itemsize
        # Logits land in one preallocated [max_batch, 1, vocab] buffer: nothing is allocated
        # per step, and the cached bindings below never hold on to outputs of their own
        # (each one would keep its last logits alive: up to ~1 GB over all row ranges).
        self._logits = ort.OrtValue.ortvalue_from_shape_and_type(
            [max_batch, 1, self.vocab_size], np.float32, device, self._device_id
        )
        self._bindings: dict[tuple[int, int], ort.IOBinding] = {}

    # ------------------------------------------------------------------ public API

    def length(self, slot: int) -> int:
        """Number of positions (prompt + generated tokens) held by `slot`."""
        self._check_slot(slot)
        return int(self._lengths[slot])

    def prefill(self, slot: int, token_ids: Sequence[int]) -> np.ndarray:
        """Append `token_ids` to `slot` (normally a fresh one) and return the logits of the
        last position, float32 [vocab]. Long inputs run in chunks of `prefill_chunk`."""
        self._check_slot(slot)
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("prefill needs at least one token")
        start = int(self._lengths[slot])
        if start + ids.size > self.max_len:
            raise ValueError(f"slot {slot}: {start} + {ids.size} tokens exceed max_len {self.max_len}")
        logits: np.ndarray | None = None
        # Equal-sized chunks: a 1-token tail chunk would take the decode kernels, whose
        # int8 numerics differ slightly from the prompt path (deterministic either way).
        n_chunks = -(-ids.size // self.prefill_chunk)
        for chunk in np.array_split(ids, n_chunks):
            total = int(self._lengths[slot]) + chunk.size
            mask = np.ones((1, total), dtype=np.int64)
            out = self._run(chunk[None, :], mask, first_row=slot, rows=1)
            self._lengths[slot] = total
            logits = out[0, -1]
        assert logits is not None
        return np.array(logits, dtype=np.float32, copy=True)

    def decode(self, slots: Sequence[int], last_tokens: Sequence[int]) -> np.ndarray:
        """One decode step: feed `last_tokens[i]` to `slots[i]`; return float32 logits
        [len(slots), vocab] in the order of `slots`.

        The step runs over the contiguous row range [min(slots), max(slots)] of the cache
        (cheapest when active slots are packed at the low end). Rows in that range that
        are not in `slots` get a dummy token whose KV lands just past their valid length,
        where it is ignored and later overwritten, so they are not disturbed.
        """
        if len(slots) != len(last_tokens):
            raise ValueError("slots and last_tokens must have the same length")
        if not slots:
            return np.zeros((0, self.vocab_size), dtype=np.float32)
        sl = np.asarray(slots, dtype=np.int64)
        if len(set(sl.tolist())) != sl.size:
            raise ValueError("duplicate slot in decode")
        for s in sl:
            self._check_slot(int(s))
            if self._lengths[s] == 0:
                raise ValueError(f"slot {int(s)} is empty: prefill it first")
            if self._lengths[s] >= self.max_len:
                raise ValueError(f"slot {int(s)} is full (max_len {self.max_len})")
        lo, hi = int(sl.min()), int(sl.max()) + 1
        n = hi - lo
        idx = sl - lo

        ids = np.zeros((n, 1), dtype=np.int64)  # dummy token 0 for idle rows
        ids[idx, 0] = np.asarray(last_tokens, dtype=np.int64)
        # New length per row; idle rows write at their current length (or the last cell
        # of a full row, which can never be decoded again).
        new_len = np.minimum(self._lengths[lo:hi] + 1, self.max_len)
        total = int(new_len.max())
        # Right-padded mask: row r has new_len[r] ones.
        mask = (np.arange(total, dtype=np.int64)[None, :] < new_len[:, None]).astype(np.int64)
        out = self._run(ids, mask, first_row=lo, rows=n)
        self._lengths[sl] += 1
        return np.array(out[idx, -1], dtype=np.float32, copy=True)

    def release(self, slot: int) -> None:
        """Forget `slot`'s sequence so the slot can be reused (no memory is touched)."""
        self._check_slot(slot)
        self._lengths[slot] = 0

    def release_all(self) -> None:
        self._lengths[:] = 0

    # ------------------------------------------------------------------ internals

    def _run(self, input_ids: np.ndarray, mask: np.ndarray, first_row: int, rows: int) -> np.ndarray:
        """Run the graph on cache rows [first_row, first_row + rows); return logits
        [rows, 1, vocab] as a host numpy array (on CPU a view of the logits buffer: copy
        what you keep before the next run)."""
        io = self._binding(first_row, rows)
        # Small per-step inputs go host -> device inside ORT; same path for CPU and CUDA.
        io.bind_cpu_input("input_ids", input_ids)
        io.bind_cpu_input("attention_mask", mask)
        self._session.run_with_iobinding(io)
        return io.get_outputs()[0].numpy()  # "logits" was bound first

    def _binding(self, first_row: int, rows: int) -> ort.IOBinding:
        """IOBinding with the KV cache rows [first_row, first_row + rows) bound as both
        past and present. Cached per row range (the KV pointers never change), which saves
        ~0.3 ms of Python binding calls per step."""
        key = (first_row, rows)
        io = self._bindings.get(key)
        if io is not None:
            return io
        io = self._session.io_binding()
        # First, so it is output index 0: rows [0, rows) of the shared logits buffer.
        io.bind_output(
            "logits", self._device, self._device_id, np.float32, [rows, 1, self.vocab_size], self._logits.data_ptr()
        )
        shape = [rows, self.kv_heads, self.max_len, self.head_dim]
        offset = first_row * self._row_bytes
        for past_name, present_name, buf in self._kv:
            ptr = buf.data_ptr() + offset
            # Same memory as past input and present output => GQA shared-buffer mode.
            io.bind_input(past_name, self._device, self._device_id, self._kv_dtype, shape, ptr)
            io.bind_output(present_name, self._device, self._device_id, self._kv_dtype, shape, ptr)
        self._bindings[key] = io
        return io

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.max_batch:
            raise IndexError(f"slot {slot} out of range [0, {self.max_batch})")

    def _read_json(self, name: str) -> dict:
        path = self.model_dir / name
        if not path.is_file():
            return {}
        with path.open() as f:
            return json.load(f)

    @staticmethod
    def _dim(graph_dim: object, fallback: object, what: str) -> int:
        if isinstance(graph_dim, int):
            return graph_dim
        if fallback is None:
            raise RuntimeError(f"cannot determine {what} from the model")
        return int(fallback)
