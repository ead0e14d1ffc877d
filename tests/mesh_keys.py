"""The keys file the test mesh starts with (a plain module: tests import it by name)."""

import hashlib
import json
from pathlib import Path

# Keys from the reloadable keys file (hashes only), each showing one kind of limit.
SCOPED_KEYS = {
    "gm-test-models-only": {"endpoints": ["models"]},
    "gm-test-other-model": {"endpoints": ["completions"], "models": ["some-other-model"]},
    "gm-test-slow": {"requests_per_minute": 2},
    "gm-test-revocable": {},
    # Minutes of steady load (the soak) run above the default 600 requests per minute.
    "gm-test-load": {"requests_per_minute": 60000},
}


def write_keys_file(path: Path, keys: dict[str, dict]) -> None:
    entries = [{"name": k, "sha256": hashlib.sha256(k.encode()).hexdigest(), **scopes} for k, scopes in keys.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": entries}))
    tmp.replace(path)  # atomic, as an operator's deploy tool would do
