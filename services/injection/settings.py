"""Injection service configuration, from INJECTION_* environment variables."""

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _model_root() -> Path:
    return Path(os.environ.get("GUARDMESH_MODEL_ROOT") or Path.home() / ".cache/guardmesh/models")


class InjectionSettings(BaseSettings):
    """Built once in __main__ and passed down; nothing reads the environment later."""

    model_config = SettingsConfigDict(env_prefix="INJECTION_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 50062
    metrics_port: int = 9112
    # The converted model (`make models`: services/injection/convert.py);
    # default $GUARDMESH_MODEL_ROOT/injection.
    model_dir: Path = Field(default_factory=lambda: _model_root() / "injection")
    # `int8` (model.int8.onnx, ~2x faster, |p - torch| <= 0.02 checked at conversion) or
    # `fp32` (model.onnx, the exact export).
    precision: Literal["int8", "fp32"] = "int8"
    # onnxruntime threads for one model call.
    intra_op_threads: int = Field(default=2, ge=1)
    # A probability at or above this counts as an attack in metrics and logs (the caller
    # applies its own threshold to the returned probabilities).
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # Long prompts are scored in overlapping windows of the model's 512 tokens (max over
    # windows); `window_stride` tokens between window starts.
    window_stride: int = Field(default=384, ge=1)
    # Request bounds (INVALID_ARGUMENT beyond them).
    max_texts: int = Field(default=64, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1)
    # Micro-batching across concurrent requests: windows per model call. Every window is a
    # full 512-position pass, so batching saves only per-call overhead (measured ~1.0-1.1x on
    # 2 cores) while a big batch makes every caller in it wait for all of it: keep it small.
    max_batch: int = Field(default=2, ge=1)
    max_wait_s: float = Field(default=0.0, ge=0.0)
    log_level: str = "INFO"
