"""Factuality service configuration, from FACTUALITY_* environment variables."""

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class FactualitySettings(BaseSettings):
    """Built once in __main__ and passed down; nothing reads the environment later."""

    model_config = SettingsConfigDict(env_prefix="FACTUALITY_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 50064
    metrics_port: int = 9114
    # "cpu" or "cuda": which ONNX Runtime execution provider runs the embedding model.
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = 2
    # Request bounds: more pairs, or a longer reference or text, is INVALID_ARGUMENT.
    max_pairs: int = 64
    max_text_chars: int = 20_000
    # Micro-batching across concurrent requests: pairs per model call, and the collection window.
    max_batch: int = 64
    max_wait_s: float = 0.002
    # Scoring parameters (see scorer.py); tuned on tests/data/factuality_dev.jsonl.
    sim_floor: float = 0.4
    sim_full: float = 0.8
    fact_penalty: float = 0.3
    negation_penalty: float = 0.5
    min_weight: float = 0.5
    log_level: str = "INFO"
