"""API keys: kept as SHA-256 hashes, compared in constant time, each with scopes and a rate limit.

Keys come from GUARDMESH_API_KEYS (every scope, the default rate) and optionally from a
keys file (JSON, hashes only) that is re-read when it changes, so keys can be added,
narrowed or revoked without a restart:

    {"keys": [{"name": "ci", "sha256": "<hex of sha256(key)>",
               "endpoints": ["completions", "models"], "models": ["SmolLM2-135M-Instruct"],
               "requests_per_minute": 60}]}

`endpoints` and `models` are optional (absent = all). Endpoint names: completions,
models, pii, injection, toxicity, factuality.
"""

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger()

ENDPOINTS = frozenset({"completions", "models", "pii", "injection", "toxicity", "factuality"})


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class ApiKey:
    """One configured key: its hash, what it may use, how often."""

    name: str
    sha256: bytes
    endpoints: frozenset[str] | None = None  # None: every endpoint
    models: frozenset[str] | None = None  # None: every model
    requests_per_minute: float | None = None  # None: the default rate

    def allows(self, endpoint: str, model: str | None = None) -> bool:
        if self.endpoints is not None and endpoint not in self.endpoints:
            return False
        return model is None or self.models is None or model in self.models


class KeysFileError(ValueError):
    """The keys file cannot be used; the message says why."""


def parse_keys_file(text: str) -> list[ApiKey]:
    try:
        data = json.loads(text)
        entries = data["keys"]
        keys = []
        for i, entry in enumerate(entries):
            endpoints = entry.get("endpoints")
            if endpoints is not None and not set(endpoints) <= ENDPOINTS:
                raise KeysFileError(f"key {i}: unknown endpoints {sorted(set(endpoints) - ENDPOINTS)}")
            sha = bytes.fromhex(entry["sha256"])
            if len(sha) != 32:
                raise KeysFileError(f"key {i}: sha256 must be 64 hex digits")
            rate = entry.get("requests_per_minute")
            keys.append(
                ApiKey(
                    name=str(entry.get("name") or f"key-{i}"),
                    sha256=sha,
                    endpoints=None if endpoints is None else frozenset(endpoints),
                    models=None if entry.get("models") is None else frozenset(entry["models"]),
                    requests_per_minute=None if rate is None else float(rate),
                )
            )
    except KeysFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise KeysFileError(f"malformed keys file: {type(e).__name__}: {e}") from None
    return keys


class KeyStore:
    """Answers which configured key a presented key is; reloads the keys file when it changes."""

    def __init__(self, env_keys: Iterable[str] = (), keys_file: Path | None = None, check_every_s: float = 1.0):
        self._env = [ApiKey(name=f"env-{i}", sha256=digest(k)) for i, k in enumerate(k for k in env_keys if k)]
        self._file = keys_file
        self._check_every_s = check_every_s
        self._file_keys: list[ApiKey] = []
        self._file_mtime: float | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        if keys_file is not None:
            self._reload(strict=True)  # fail fast at start-up on a broken file

    @classmethod
    def from_csv(cls, csv: str, keys_file: Path | None = None) -> "KeyStore":
        return cls((k.strip() for k in csv.split(",")), keys_file)

    def __len__(self) -> int:
        return len(self._env) + len(self._file_keys)

    def lookup(self, key: str) -> ApiKey | None:
        """The matching key, comparing against every hash without stopping early."""
        self._maybe_reload()
        presented = digest(key)
        found = None
        for candidate in (*self._env, *self._file_keys):
            if hmac.compare_digest(presented, candidate.sha256):
                found = candidate
        return found

    def is_valid(self, key: str) -> bool:
        return self.lookup(key) is not None

    def _maybe_reload(self) -> None:
        if self._file is None or time.monotonic() - self._checked < self._check_every_s:
            return
        with self._lock:
            self._checked = time.monotonic()
            self._reload(strict=False)

    def _reload(self, strict: bool) -> None:
        try:
            mtime = self._file.stat().st_mtime
            if mtime == self._file_mtime:
                return
            keys = parse_keys_file(self._file.read_text())
        except (OSError, KeysFileError) as e:
            if strict:
                raise KeysFileError(f"{self._file}: {e}") from None
            # A bad edit must not lock everyone out or let revoked keys back in: keep the last
            # good keys and say so (the hashes and names are not secrets, the reason is logged).
            log.error("keys file not reloaded", path=str(self._file), reason=str(e)[:200])
            return
        self._file_keys, self._file_mtime = keys, mtime
        log.info("keys file loaded", path=str(self._file), keys=len(keys))


class RateLimiter:
    """A token bucket per key: `rate` requests per minute, bursts up to the same number."""

    def __init__(self, default_per_minute: float):
        self._default = default_per_minute
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last refill time)
        self._lock = threading.Lock()

    def acquire(self, key: ApiKey) -> float:
        """Takes one request; returns 0 when allowed, else the seconds until one is."""
        rate = key.requests_per_minute if key.requests_per_minute is not None else self._default
        if rate <= 0:
            return 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key.name, (rate, now))
            tokens = min(rate, tokens + (now - last) * rate / 60)
            if tokens >= 1:
                self._buckets[key.name] = (tokens - 1, now)
                return 0.0
            self._buckets[key.name] = (tokens, now)
            return (1 - tokens) * 60 / rate


def bearer_token(authorization: str | None) -> str | None:
    """Extracts the key from an `Authorization: Bearer <key>` value."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
