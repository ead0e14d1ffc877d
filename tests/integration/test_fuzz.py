"""Fuzzes the live gateway with its own OpenAPI document, then sends hostile requests.

1. schemathesis generates requests for every operation of gateway/openapi.yaml, valid
   ones (positive) and invalid ones (negative), and checks every response: no 5xx, a
   documented status and content type, a body that matches the documented schema, and
   every non-2xx is `application/json` with exactly `{"error": "<string>"}`. Generation
   is kept cheap: the fuzzed copy of the document caps `max_tokens` at 3, `n` at 2 and
   the prompt sizes, and forbids extra body properties (they would be ignored anyway,
   which a hand-written case checks).
2. Hand-written hostile requests: wrong types for every field, huge numbers, NaN and
   Infinity, deep nesting, invalid UTF-8, a 10 MB body, limits, unknown fields/params,
   wrong methods, bad headers.
3. Afterwards the mesh is still healthy: `GET /readyz` is 200 and a completion works.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import httpx
import jsonschema
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "gateway" / "openapi.yaml").read_text())
MODEL = "SmolLM2-135M-Instruct"
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


# --------------------------------------------------------------------------- helpers


def fuzz_document(spec: dict) -> dict:
    """A copy of the document whose valid requests are cheap to serve."""
    doc = copy.deepcopy(spec)
    schemas = doc["components"]["schemas"]
    for name in (
        "CompletionRequest",
        "StreamOptions",
        "InputChecks",
        "OutputChecks",
        "CheckPiiRequest",
        "CheckInjectionRequest",
        "CheckToxicityRequest",
        "CheckFactualityRequest",
    ):
        schemas[name]["additionalProperties"] = False
    request = schemas["CompletionRequest"]
    props = request["properties"]
    props["model"] = {"const": MODEL}  # any other model is a quick 400
    # max_tokens always set (else the default of 100 applies) and tiny.
    props["max_tokens"] = {"type": "integer", "minimum": 1, "maximum": 3}
    request["required"] = [*request["required"], "max_tokens"]
    props["max_completion_tokens"]["maximum"] = 3
    props["n"]["maximum"] = 2
    string_prompt, list_prompt = props["prompt"]["oneOf"]
    string_prompt["maxLength"] = 64
    list_prompt["maxItems"] = 3
    list_prompt["items"]["maxLength"] = 32
    props["logit_bias"]["propertyNames"] = {"pattern": "^[0-9]{1,4}$"}
    props["logit_bias"]["maxProperties"] = 4
    schemas["InputChecks"]["properties"]["entity_list"]["maxItems"] = 3
    for name, fields in (
        ("CheckPiiRequest", ["prompt"]),
        ("CheckInjectionRequest", ["prompt"]),
        ("CheckToxicityRequest", ["text"]),
        ("CheckFactualityRequest", ["reference", "text"]),
    ):
        for field in fields:
            schemas[name]["properties"][field]["maxLength"] = 200
    schemas["CheckPiiRequest"]["properties"]["entity_list"]["maxItems"] = 3
    return doc


FUZZ_SCHEMA = schemathesis.openapi.from_dict(fuzz_document(SPEC))
OPERATIONS = {op.label: op for op in (result.ok() for result in FUZZ_SCHEMA.get_all_operations())}


def validator(name: str) -> jsonschema.protocols.Validator:
    """A validator for one of the document's component schemas."""
    root = {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]}
    return jsonschema.Draft202012Validator(root)


CHUNK = validator("CompletionChunk")
STREAM_ERROR = validator("StreamError")
COMPLETION = validator("CompletionResponse")


def header(response, name: str) -> str:
    value = response.headers.get(name, "")
    return value[0] if isinstance(value, list) else value


def assert_error_shape(status: int, content_type: str, body: bytes, what: str = "") -> None:
    """Every non-2xx: application/json and exactly {"error": "<string>"}."""
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    if status < 300:
        return
    assert content_type == "application/json", f"{what}: {status} {content_type} {body[:300]!r}"
    if not body:
        return  # HEAD
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and list(parsed) == ["error"], f"{what}: {body[:300]!r}"
    assert isinstance(parsed["error"], str), f"{what}: {body[:300]!r}"


def assert_sse(body: bytes, what: str = "") -> None:
    """A text/event-stream completion: CompletionChunk events, then [DONE] (or an error event)."""
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert events, what
    for event in events:
        assert event.startswith("data: "), f"{what}: {event[:200]!r}"
    payloads = [e[len("data: ") :] for e in events]
    for i, payload in enumerate(payloads):
        if payload == "[DONE]":
            assert i == len(payloads) - 1, f"{what}: [DONE] is not last"
            continue
        data = json.loads(payload)
        if "error" in data:
            STREAM_ERROR.validate(data)
            assert i == len(payloads) - 1, f"{what}: an event follows the error"
        else:
            CHUNK.validate(data)
    assert payloads[-1] == "[DONE]" or "error" in json.loads(payloads[-1]), what


def check_response(response, what: str = "") -> None:
    content_type = header(response, "content-type")
    assert_error_shape(response.status_code, content_type, response.content, what)
    if response.status_code == 200 and content_type == "text/event-stream":
        assert_sse(response.content, what)


# --------------------------------------------------------------------------- schemathesis


@pytest.fixture(scope="module")
def live(mesh):
    mesh.wait_ready()
    return mesh


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_operation(live, label, mode):
    operation = OPERATIONS[label]
    takes_input = bool(operation.body) or any(True for _ in operation.iter_parameters())
    if mode is GenerationMode.NEGATIVE and not takes_input:
        pytest.skip("nothing to make invalid")
    headers = live.headers()
    statuses: dict[int, int] = {}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call(base_url=live.base_url, headers=headers, timeout=60)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        check_response(response, f"{case.method} {case.formatted_path} {case.body!r}"[:500])
        case.validate_response(response, checks=CHECKS)

    run()
    print(f"{label} {mode.value}: statuses {dict(sorted(statuses.items()))}")
    if takes_input:
        assert sum(statuses.values()) >= MAX_EXAMPLES // 2, statuses


# --------------------------------------------------------------------------- hostile requests


def completion(**fields) -> dict:
    return {"model": MODEL, "prompt": "Hi", "max_tokens": 2, **fields}


def send(
    live, method: str, path: str, content: bytes | str | None = None, *, headers=None, params=None
) -> httpx.Response:
    all_headers = {**live.headers(), "content-type": "application/json", **(headers or {})}
    response = httpx.request(
        method, f"{live.base_url}{path}", content=content, headers=all_headers, params=params, timeout=60
    )
    check_response(response, f"{method} {path} {str(content)[:200]}")
    return response


def post_json(live, path: str, body) -> httpx.Response:
    return send(live, "POST", path, json.dumps(body))


def assert_400(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def test_completion_response_conforms(live):
    r = post_json(live, "/completions", completion(prompt=["a", "b"], n=2))
    assert r.status_code == 200, r.text
    COMPLETION.validate(r.json())
    r = post_json(live, "/completions", completion(stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert r.text.endswith("data: [DONE]\n\n")


REQUEST_FIELDS = {
    "/completions": (completion(), SPEC["components"]["schemas"]["CompletionRequest"]),
    "/PII": ({"prompt": "My name is John"}, SPEC["components"]["schemas"]["CheckPiiRequest"]),
    "/injection": ({"prompt": "hello"}, SPEC["components"]["schemas"]["CheckInjectionRequest"]),
    "/toxicity": ({"text": "hello"}, SPEC["components"]["schemas"]["CheckToxicityRequest"]),
    "/factuality": ({"reference": "a b", "text": "a b"}, SPEC["components"]["schemas"]["CheckFactualityRequest"]),
}
NESTED = {"stream_options": "include_usage", "input": "pii", "output": "toxicity"}
WRONG_VALUES = [{"a": 1}, [{"a": 1}], "not-a-number", 12345, True, [1, 2]]


def _types(schema: dict) -> set[str]:
    if "$ref" in schema:
        return {"object"}
    if "enum" in schema:
        return {"string"}
    if "oneOf" in schema:
        return set().union(*(_types(s) for s in schema["oneOf"]))
    types = schema.get("type", [])
    return set(types if isinstance(types, list) else [types]) - {"null"}


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {dict: "object", list: "array", str: "string"}[type(value)]


@pytest.mark.parametrize("path", sorted(REQUEST_FIELDS))
def test_wrong_types_for_every_field(live, path):
    """An object or a list where the document allows none is a 400. Other wrong scalar
    types are a 400 or, where proto3 JSON parsing is lenient ("12" for a number, "true"
    for a bool, a number for an enum-like string), accepted; never a 5xx."""
    valid, schema = REQUEST_FIELDS[path]
    for name, prop in schema["properties"].items():
        allowed = _types(prop)
        if "number" in allowed:
            allowed.add("integer")
        for wrong in WRONG_VALUES:
            kind = _json_type(wrong)
            if kind in allowed:
                continue
            body = {**valid, name: wrong}
            if name == "stream_options":
                body["stream"] = True
            r = post_json(live, path, body)
            if kind in ("object", "array"):
                assert_400(r)
            else:
                assert r.status_code in (200, 400), (name, wrong, r.text)
        if name in NESTED:  # wrong types one level down
            for wrong in ({"a": 1}, [1]):
                body = {**valid, name: {NESTED[name]: wrong}}
                if name == "stream_options":
                    body["stream"] = True
                assert_400(post_json(live, path, body))


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", 1e308),
        ("top_p", 1e308),
        ("frequency_penalty", -1e308),
        ("presence_penalty", 1e308),
        ("max_tokens", 2**63),
        ("max_tokens", 2**31),
        ("n", 2**63),
        ("top_k", 2**63),
        ("seed", 2**63),
        ("seed", 2**70),
        ("max_completion_tokens", 2**64),
        ("n", 1e308),
        ("max_tokens", -1),
        ("n", 0),
        ("top_k", -1),
    ],
)
def test_huge_numbers(live, field, value):
    assert_400(post_json(live, "/completions", completion(**{field: value})))


def test_number_literal_beyond_double(live):
    body = json.dumps(completion(temperature=1.0))
    body = body.replace('"temperature": 1.0', '"temperature": 1e999')
    assert_400(send(live, "POST", "/completions", body))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "frequency_penalty", "presence_penalty"])
def test_nan_and_infinity_strings(live, field, value):
    assert_400(post_json(live, "/completions", completion(**{field: value})))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_logit_bias(live, value):
    assert_400(post_json(live, "/completions", completion(logit_bias={"1": value})))


@pytest.mark.parametrize("where", ["prompt", "unknown field", "object"])
def test_deeply_nested_json(live, where):
    depth = 10_000
    if where == "object":
        nested = '{"a":' * depth + "1" + "}" * depth
    else:
        nested = "[" * depth + "]" * depth
    field = "prompt" if where == "prompt" else "zz"
    head = json.dumps(completion())[:-1]
    assert_400(send(live, "POST", "/completions", f'{head}, "{field}": {nested}}}'))


@pytest.mark.parametrize(
    "path,body",
    [
        ("/completions", b'{"model":"' + MODEL.encode() + b'","prompt":"\xff\xfe abc","max_tokens":2}'),
        ("/completions", b'{"model":"\xc3\x28","prompt":"hi"}'),
        ("/completions", b'{"model":"' + MODEL.encode() + b'","prompt":"\xed\xa0\x80"}'),  # surrogate
        ("/completions", b'{"model":"' + MODEL.encode() + b'","prompt":"\\ud800 lone"}'),
        ("/PII", b'{"prompt":"\xff"}'),
        ("/injection", b'{"prompt":"\xc0\xaf"}'),  # overlong
        ("/toxicity", b'{"text":"\xf5\x80\x80\x80"}'),  # above U+10FFFF
        ("/factuality", b'{"reference":"a","text":"\x80"}'),
    ],
)
def test_invalid_utf8_body(live, path, body):
    assert_400(send(live, "POST", path, body))


@pytest.mark.parametrize(
    "target",
    [
        "/models/%ff%fe",
        "/models/%c0%af",
        "/models/%ed%a0%80",
        "/models?capability=%ff",
        "/readyz?x=%ff",
        "/completions?model=%ff",
    ],
)
def test_invalid_utf8_in_url(live, target):
    """The transcoder percent-decodes path and query values into proto strings; invalid
    UTF-8 there used to reach the orchestrator and fail its request parsing (500)."""
    method = "POST" if target.startswith("/completions") else "GET"
    body = json.dumps(completion()) if method == "POST" else None
    r = send(live, method, target, body)
    assert_400(r)
    assert "UTF-8" in r.json()["error"]


@pytest.mark.parametrize("path", ["/completions", "/PII", "/toxicity"])
def test_ten_megabyte_body(live, path):
    body = b'{"model":"x","prompt":"' + b"a" * (10 * 1024 * 1024) + b'"}'
    r = send(live, "POST", path, body)
    assert r.status_code == 413 and "too large" in r.json()["error"]


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"prompt": ""}, "empty"),
        ({"prompt": []}, "empty"),
        ({"prompt": ["ok", ""]}, "empty"),
        ({"prompt": ["a"] * 1000}, "at most 64"),
        ({"model": "no-such-model"}, "not served"),
        ({"model": ""}, "model"),
        ({"stop": ["x"] * 100}, "at most 4"),
        ({"stop": ""}, "empty"),
        ({"prompt": ["a"] * 8, "n": 16}, "at most 64"),
        ({"stream_options": {"include_usage": True}}, "stream"),
        ({"logit_bias": {"abc": 1}}, "token id"),
        ({"logit_bias": {"99999": 1}}, "vocabulary"),
        ({"input": {"pii": "shred"}}, "input.pii"),
        ({"input": {"pii": "replace", "pii_replace_method": "burn"}}, "pii_replace_method"),
        ({"max_tokens": 2048, "prompt": "x " * 100}, "context length"),
    ],
)
def test_limits(live, fields, message):
    r = post_json(live, "/completions", completion(**fields))
    assert_400(r)
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    "path,body",
    [
        ("/PII", {"prompt": ""}),
        ("/PII", {"prompt": "   "}),
        ("/PII", {}),
        ("/PII", {"prompt": "x", "replace": True, "replace_method": "burn"}),
        ("/injection", {"prompt": ""}),
        ("/toxicity", {"text": ""}),
        ("/toxicity", {}),
        ("/factuality", {"reference": "a"}),
        ("/factuality", {"text": "a", "reference": " "}),
    ],
)
def test_check_limits(live, path, body):
    assert_400(post_json(live, path, body))


@pytest.mark.parametrize("body", ["", "{", "[1, 2]", '"x"', "null", "1", '{"model": }', "model=x&prompt=y", "\x00"])
def test_malformed_bodies(live, body):
    assert_400(send(live, "POST", "/completions", body))


def test_unknown_json_fields_are_ignored(live):
    body = completion(foo=1, bar={"x": [1, 2, {"y": None}]}, logprobs=5, user="me")
    r = post_json(live, "/completions", body)
    assert r.status_code == 200, r.text
    COMPLETION.validate(r.json())
    r = post_json(live, "/toxicity", {"text": "hello", "extra": True})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/completions"),
        ("GET", "/models"),
        ("GET", "/readyz"),
        ("GET", "/completions"),
    ],
)
def test_unknown_query_parameter(live, method, path):
    body = json.dumps(completion()) if method == "POST" else None
    r = send(live, method, path, body, params={"bogus": "1"})
    assert_400(r)
    assert "bogus" in r.json()["error"]


@pytest.mark.parametrize(
    "method,path",
    [
        ("DELETE", "/completions"),
        ("PUT", "/completions"),
        ("PATCH", "/PII"),
        ("GET", "/toxicity"),
        ("POST", "/models"),
        ("DELETE", "/models/completion"),
        ("POST", "/readyz"),
        ("POST", "/openapi.json"),
        ("OPTIONS", "/PII"),
    ],
)
def test_wrong_methods_are_405(live, method, path):
    r = send(live, method, path, "{}")
    assert r.status_code == 405, r.text
    assert r.json()["error"].startswith("method not allowed") and r.headers["allow"]


@pytest.mark.parametrize("method,path", [("GET", "/nope"), ("GET", "/completions/x"), ("POST", "/v1/completions")])
def test_unknown_paths_are_404(live, method, path):
    r = send(live, method, path, "{}")
    assert r.status_code == 404, r.text
    assert r.json() == {"error": "not found: no such route (method and path)"}


@pytest.mark.parametrize(
    "headers,status",
    [
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401),
        ({"Authorization": "Bearer " + "k" * 20_000}, 431),
        ({"grpc-timeout": "garbage"}, 400),
        ({"grpc-timeout": "999999999S"}, 400),
        ({"grpc-encoding": "gzip"}, 200),  # gRPC protocol headers from a REST caller are dropped
        ({"grpc-previous-rpc-attempts": "x"}, 200),
        ({"x-anything-bin": "!!! not base64"}, 200),
        ({"x-request-id": b"\xff\xfe"}, 200),
        ({"content-type": "text/plain"}, 200),
    ],
)
def test_hostile_headers(live, headers, status):
    r = send(live, "GET", "/models", None, headers=headers)
    assert r.status_code == status, r.text


def test_spec_is_served_and_matches(live):
    r = httpx.get(f"{live.base_url}/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == SPEC


def test_mesh_is_healthy_after_the_fuzzing(live):
    """Last in this module: nothing above broke the mesh."""
    r = httpx.get(f"{live.base_url}/readyz", timeout=10)
    assert r.status_code == 200, r.text
    r = post_json(live, "/completions", completion(prompt="The capital of France is", temperature=0, max_tokens=8))
    assert r.status_code == 200, r.text
    body = r.json()
    COMPLETION.validate(body)
    assert "Paris" in body["choices"][0]["text"]
    assert math.isfinite(body["usage"]["total_tokens"])
