"""API keys: kept as SHA-256 hashes, compared in constant time."""

import hashlib
import hmac
from collections.abc import Iterable


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyStore:
    """Answers whether a presented key is one of the configured keys."""

    def __init__(self, keys: Iterable[str]):
        self._hashes = [_digest(k) for k in keys if k]

    @classmethod
    def from_csv(cls, csv: str) -> "KeyStore":
        return cls(k.strip() for k in csv.split(","))

    def __len__(self) -> int:
        return len(self._hashes)

    def is_valid(self, key: str) -> bool:
        presented = _digest(key)
        # Compare against every hash, without stopping early, so timing reveals nothing.
        found = False
        for stored in self._hashes:
            found |= hmac.compare_digest(presented, stored)
        return found


def bearer_token(authorization: str | None) -> str | None:
    """Extracts the key from an `Authorization: Bearer <key>` value."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
