"""The trained toxicity head: the built one (make models), else one trained now into a temp dir."""

import os
from pathlib import Path

import pytest

from toxicity.classifier import HEAD_FILE

DEFAULT_DIR = Path(os.environ.get("TOXICITY_MODEL_DIR", Path.home() / ".cache/guardmesh/models/toxicity"))


@pytest.fixture(scope="session")
def toxicity_model_dir(tmp_path_factory) -> Path:
    if (DEFAULT_DIR / HEAD_FILE).is_file():
        return DEFAULT_DIR
    from toxicity import train

    out = tmp_path_factory.mktemp("toxicity-model") / "toxicity"
    assert train.main(["--out", str(out)]) == 0
    return out
