"""Fixtures for the injection service: the converted model (needs `make models`)."""

from __future__ import annotations

import pytest

from injection.settings import InjectionSettings


@pytest.fixture(scope="session")
def injection_model_dir():
    model_dir = InjectionSettings().model_dir
    if not (model_dir / "provenance.json").is_file():
        pytest.skip(f"no converted injection model in {model_dir} (run `make models`)")
    return model_dir


@pytest.fixture(scope="session", params=["int8", "fp32"])
def injection_model(request, injection_model_dir):
    from injection.classifier import OnnxInjectionModel

    model = OnnxInjectionModel(injection_model_dir, precision=request.param)
    model.load()
    return model
