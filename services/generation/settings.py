"""Generation service configuration, from GENERATION_* environment variables."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GenerationSettings(BaseSettings):
    """Built once in __main__ and passed down; nothing reads the environment later."""

    model_config = SettingsConfigDict(env_prefix="GENERATION_", frozen=True)

    model_dir: Path = Field(
        default=Path.home() / ".cache/guardmesh/models/smollm2-135m-instruct-int8",
        validation_alias="GUARDMESH_MODEL_DIR",
    )
    # The name callers pass as `model`; also the Triton model name.
    model_name: str = "SmolLM2-135M-Instruct"
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    # "cpu" or "cuda": which ONNX Runtime execution provider runs the model.
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = 2
    # KV-cache slots (sequences decoded together) and tokens per slot (context window).
    max_batch: int = 32
    max_len: int = 2048
    # Prompt tokens prefilled per scheduler iteration (between two decode steps): bounds how
    # long a new long prompt stalls the running streams.
    prefill_chunk: int = 256
    # Requests waiting for a slot beyond this are refused at once (UNAVAILABLE).
    max_waiting: int = 256
    # A stream with no new token for this long sends an empty heartbeat response.
    heartbeat_s: float = 1.0
    # With more than `coalesce_above` sequences generating, a stream sends at most one
    # response per `coalesce_s` (tokens in between go together; the first goes at once).
    coalesce_s: float = 0.1
    coalesce_above: int = 4
    # On SIGTERM, running streams get this long to finish before Triton stops.
    drain_seconds: float = 20.0
    log_level: str = "INFO"
