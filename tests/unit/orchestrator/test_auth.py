import hashlib
import json
import os
import time

import pytest

from orchestrator.auth import ApiKey, KeysFileError, KeyStore, RateLimiter, bearer_token, parse_keys_file


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_keys(path, *entries):
    path.write_text(json.dumps({"keys": list(entries)}))
    # Make each write visible to an mtime check even within one clock tick.
    stamp = time.time() + len(entries) + path.stat().st_size / 1e6
    os.utime(path, (stamp, stamp))


def test_only_configured_keys_are_valid():
    keys = KeyStore.from_csv(" alpha, beta ,,")
    assert len(keys) == 2
    assert keys.is_valid("alpha") and keys.is_valid("beta")
    assert not keys.is_valid("gamma") and not keys.is_valid("") and not keys.is_valid("alpha ")


def test_keys_are_not_kept_in_clear():
    keys = KeyStore(["secret-key"])
    assert "secret-key" not in repr(vars(keys))


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), ("", None), (None, None)],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_scopes():
    key = ApiKey("k", b"x" * 32, endpoints=frozenset({"completions"}), models=frozenset({"m1"}))
    assert key.allows("completions", "m1") and key.allows("completions")
    assert not key.allows("completions", "m2") and not key.allows("pii")
    assert ApiKey("all", b"x" * 32).allows("toxicity", "anything")


def test_keys_file_is_reloaded_without_restart(tmp_path):
    path = tmp_path / "keys.json"
    write_keys(path, {"name": "a", "sha256": sha("key-a"), "endpoints": ["models"]})
    keys = KeyStore([], path, check_every_s=0)
    assert keys.lookup("key-a").endpoints == frozenset({"models"})
    assert keys.lookup("key-b") is None
    write_keys(path, {"name": "b", "sha256": sha("key-b")})
    assert keys.lookup("key-a") is None  # revoked
    assert keys.lookup("key-b").name == "b"


def test_a_broken_edit_keeps_the_last_good_keys(tmp_path):
    path = tmp_path / "keys.json"
    write_keys(path, {"name": "a", "sha256": sha("key-a")})
    keys = KeyStore(["env-key"], path, check_every_s=0)
    path.write_text("{not json")
    os.utime(path, (time.time() + 100, time.time() + 100))
    assert keys.lookup("key-a").name == "a" and keys.is_valid("env-key")


def test_a_broken_file_at_start_fails_fast(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"sha256": "nothex"}]}')
    with pytest.raises(KeysFileError):
        KeyStore([], path)
    with pytest.raises(KeysFileError, match="unknown endpoints"):
        parse_keys_file(json.dumps({"keys": [{"sha256": sha("x"), "endpoints": ["admin"]}]}))


def test_rate_limiter_allows_a_burst_then_says_when_to_retry():
    limiter = RateLimiter(default_per_minute=600)
    slow = ApiKey("slow", b"x" * 32, requests_per_minute=3)
    assert [limiter.acquire(slow) for _ in range(3)] == [0, 0, 0]
    wait = limiter.acquire(slow)
    assert 0 < wait <= 20
    other = ApiKey("other", b"y" * 32)
    assert limiter.acquire(other) == 0  # buckets are per key
