"""The real toxicity classifier (profanity model + MiniLM head) on clear-cut cases."""

import pytest

from toxicity.classifier import CombinedClassifier

pytestmark = pytest.mark.model

THRESHOLD = 0.5  # the recommended default (see tests/bench/test_toxicity_bench.py)

TOXIC = {
    "threat": "I will find you and hurt you.",
    "threat_no_swearing": "I know where your kids go to school, and I will be waiting for them.",
    "insult": "You are a worthless, pathetic idiot.",
    "profanity": "This is fucking bullshit.",
    "harassment": "I'll keep messaging you from new accounts no matter how often you block me.",
    "identity_attack": "People of that religion are all vermin and should be driven out.",
}
BENIGN = {
    "kill_process": "kill the process",
    "damn_good": "That was a damn good meal.",
    "bug_killing": "this bug is killing me",
    "code": "Use SIGTERM to terminate the worker, then restart it.",
    "plain": "The meeting is at 3 pm in room 4.",
}


@pytest.fixture(scope="module")
def classifier(toxicity_model_dir) -> CombinedClassifier:
    return CombinedClassifier.load(toxicity_model_dir)


@pytest.mark.parametrize("name", sorted(TOXIC))
def test_toxic_texts_score_high(classifier, name):
    assert classifier.score([TOXIC[name]])[0] > THRESHOLD


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_texts_score_low(classifier, name):
    assert classifier.score([BENIGN[name]])[0] < THRESHOLD


def test_the_embedding_head_catches_threats_the_profanity_model_misses(classifier):
    text = TOXIC["threat"]
    assert classifier.profanity_only([text])[0] < THRESHOLD < classifier.score([text])[0]


def test_a_threat_inside_a_long_benign_answer_is_found(classifier):
    text = "Here is the weather report for the week. " * 20 + "I will slit your throat. " + "Have a nice day. " * 5
    assert classifier.score([text])[0] > THRESHOLD


def test_batched_equals_one_at_a_time(classifier):
    texts = list(TOXIC.values()) + list(BENIGN.values())
    batched = classifier.score(texts)
    single = [classifier.score([t])[0] for t in texts]
    assert batched == pytest.approx(single, abs=1e-4)
