"""Orchestrator configuration, from ORCHESTRATOR_* environment variables (keys: GUARDMESH_API_KEYS)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrchestratorSettings(BaseSettings):
    """Built once in __main__ and passed down; nothing reads the environment later."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int = 9101
    # Comma-separated API keys; only their SHA-256 hashes are kept in memory.
    api_keys: str = Field(default="", validation_alias="GUARDMESH_API_KEYS")
    # Optional JSON keys file (hashes, scopes, rates), re-read when it changes; see auth.py.
    keys_file: Path | None = Field(default=None, validation_alias="GUARDMESH_KEYS_FILE")
    # Requests per minute per key unless the keys file says otherwise (bursts up to the same).
    rate_limit_per_minute: float = 600.0
    # Triton (generation service) gRPC address and the model it serves.
    generation_address: str = "127.0.0.1:8001"
    model_name: str = "SmolLM2-135M-Instruct"
    model_owner: str = "HuggingFaceTB"
    max_context_tokens: int = 2048
    # Check services (host:port; a DNS name with several addresses is balanced round-robin).
    pii_address: str = "127.0.0.1:50061"
    injection_address: str = "127.0.0.1:50062"
    toxicity_address: str = "127.0.0.1:50063"
    factuality_address: str = "127.0.0.1:50064"
    # A prompt whose injection probability is over this is refused when the caller asks
    # (`input.block_prompt_injection`); attacks score ~1.0, some benign prompts ~0.5.
    injection_threshold: float = 0.9
    # A choice scoring over this toxicity fails the request (400 `failed toxicity check`).
    toxicity_threshold: float = 0.5
    # A choice scoring under this factuality fails the request (400 `failed factuality check`).
    factuality_threshold: float = 0.5
    # Defaults and bounds of the completion contract (documented in the README).
    default_max_tokens: int = 100
    max_prompts: int = 64
    max_n: int = 16
    max_choices: int = 64
    # max_tokens x n x prompts: the most tokens one request may ask to generate.
    max_total_tokens: int = 32768
    # A generation stream silent for this long is declared dead (generation heartbeats every 1 s).
    generation_idle_timeout_s: float = 5.0
    # Budget for a whole request when the caller sets no gRPC deadline.
    request_timeout_s: float = 120.0
    # The most one check call may take (a stalled check service gives 504 after this).
    check_timeout_s: float = 5.0
    # Start generating while the input checks run (their latency then hides behind the
    # generation's). Nothing generated is released before the checks pass; a prompt the
    # PII check rewrites is generated again from the rewritten text. The caller's raw
    # prompt does reach the generation service (in memory only; it logs no prompts):
    # set false where it must never see text the PII check would have replaced.
    speculative_generation: bool = True
    # How long a readiness probe waits for each dependency.
    readiness_timeout_s: float = 1.0
    log_level: str = "INFO"
