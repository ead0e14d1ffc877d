"""Toxicity service configuration, from TOXICITY_* environment variables."""

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class ToxicitySettings(BaseSettings):
    """Built once in __main__ and passed down; nothing reads the environment later."""

    model_config = SettingsConfigDict(env_prefix="TOXICITY_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 50063
    metrics_port: int = 9113
    # The trained head (head.json + provenance.json), built by `python -m toxicity.train`.
    model_dir: Path = Path.home() / ".cache/guardmesh/models/toxicity"
    # "cpu" or "cuda": which ONNX Runtime execution provider runs the embedding model.
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = 2
    # Request bounds: more texts or longer texts are INVALID_ARGUMENT.
    max_texts: int = 64
    max_text_chars: int = 20_000
    # Texts are scored in sentence chunks of about this many characters (max over chunks).
    chunk_chars: int = 200
    # Micro-batching across concurrent requests: texts per model call, and the collection window.
    max_batch: int = 64
    max_wait_s: float = 0.002
    log_level: str = "INFO"
