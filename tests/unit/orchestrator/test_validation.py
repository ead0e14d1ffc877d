import pytest
from google.protobuf import json_format

from guardmesh.v1 import completion_service_pb2 as pb
from orchestrator.settings import OrchestratorSettings
from orchestrator.validation import InvalidRequest, validate

SETTINGS = OrchestratorSettings(GUARDMESH_API_KEYS="k")
MODEL = SETTINGS.model_name


def request(**fields) -> pb.CreateCompletionRequest:
    """Parses JSON the way Envoy's transcoder does (protobuf JSON mapping)."""
    body = {"model": MODEL, "prompt": "Hello"} | fields
    return json_format.ParseDict({k: v for k, v in body.items() if v is not ...}, pb.CreateCompletionRequest())


def test_defaults():
    job = validate(request(), SETTINGS)
    assert job.prompts == ("Hello",) and job.n == 1 and not job.stream and not job.echo
    s = job.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k) == (SETTINGS.default_max_tokens, 1.0, 1.0, 0)
    assert (s.frequency_penalty, s.presence_penalty, s.logit_bias, s.stop, s.seed) == (0, 0, {}, (), None)


def test_nulls_mean_defaults_like_the_predictionguard_sdk_sends():
    nulls = dict.fromkeys(
        [
            "echo",
            "frequency_penalty",
            "logit_bias",
            "max_tokens",
            "presence_penalty",
            "stop",
            "stream",
            "temperature",
            "top_p",
            "top_k",
            "input",
            "output",
            "seed",
            "n",
            "stream_options",
        ]
    )
    assert validate(request(**nulls), SETTINGS) == validate(request(), SETTINGS)


def test_every_field_is_read():
    job = validate(
        request(
            prompt=["a", "b"],
            max_tokens=7,
            temperature=0,
            top_p=0.5,
            top_k=3,
            frequency_penalty=1,
            presence_penalty=-1,
            logit_bias={"42": 5},
            stop=["x", "y"],
            stream=True,
            stream_options={"include_usage": True},
            echo=True,
            seed=9,
            n=2,
        ),
        SETTINGS,
    )
    assert job.prompts == ("a", "b") and job.n == 2 and job.stream and job.include_usage and job.echo
    s = job.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.seed) == (7, 0, 0.5, 3, 9)
    assert (s.frequency_penalty, s.presence_penalty, s.logit_bias, s.stop) == (1, -1, {"42": 5}, ("x", "y"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": ...}, "model is required"),
        ({"model": "gpt-9"}, "is not served"),
        ({"prompt": ...}, "prompt is required"),
        ({"prompt": None}, "prompt is required"),
        ({"prompt": ""}, "must not contain empty strings"),
        ({"prompt": []}, "prompt must not be empty"),
        ({"prompt": ["ok", 3]}, "string or a list of strings"),
        ({"prompt": 5}, "string or a list of strings"),
        ({"prompt": {"a": 1}}, "string or a list of strings"),
        ({"temperature": 5}, "temperature must be in [0, 2]"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "NaN"}, "temperature must be a finite number"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"logit_bias": {"abc": 1}}, "logit_bias keys must be token ids"),
        ({"logit_bias": {"5": 101}}, "logit_bias[5]"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"stop": ""}, "empty strings"),
        ({"stop": [1]}, "string or a list of strings"),
        ({"max_tokens": 0}, "max_tokens must be between 1 and"),
        ({"max_tokens": 10**6}, "max_tokens"),
        ({"n": 0}, "n must be between"),
        ({"n": 17}, "n must be between"),
        ({"prompt": ["p"] * 10, "n": 10}, "prompts x n"),
        ({"prompt": ["p"] * 32, "n": 2, "max_tokens": 1000}, "max_tokens x n x prompts must be at most 32768"),
        ({"stream_options": {"include_usage": True}}, "only allowed when stream is true"),
        ({"input": {"pii": "hide"}}, "input.pii must be one of"),
        ({"input": {"pii": "replace", "pii_replace_method": "shuffle"}}, "pii_replace_method"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(fields, message):
    with pytest.raises(InvalidRequest, match=None) as err:
        validate(request(**fields), SETTINGS)
    assert message in str(err.value)


def test_too_many_prompts():
    with pytest.raises(InvalidRequest, match="at most 64 items"):
        validate(request(prompt=["x"] * 65), SETTINGS)


def test_max_completion_tokens_is_an_alias_and_max_tokens_wins():
    assert validate(request(max_completion_tokens=12), SETTINGS).sampling.max_tokens == 12
    assert validate(request(max_completion_tokens=12, max_tokens=3), SETTINGS).sampling.max_tokens == 3
