"""Contract test of the OpenAPI document (gateway/openapi.yaml).

- It is a valid OpenAPI 3.1 document (openapi-spec-validator).
- It matches the protos: every `google.api.http` binding in the descriptor set is a
  path + method in the document and vice versa (except GET /openapi.json, which the
  gateway serves itself); every field of each request message is a property of the
  operation's request schema (or a path/query parameter for body-less GETs) and no
  property is missing from the proto, nested messages included; required fields match
  `google.api.field_behavior = REQUIRED`; unary JSON responses list exactly the response
  message's fields.
- The real gateway (gateway/start.py + Envoy, no upstream needed) serves the same
  document at GET /openapi.json, as JSON, without a key.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "gateway" / "openapi.yaml"
DESCRIPTOR = REPO / "build" / "guardmesh.pb"
START = REPO / "gateway" / "start.py"

PUBLIC_SERVICES = (
    "guardmesh.v1.CompletionService",
    "guardmesh.v1.ModelService",
    "guardmesh.v1.CheckService",
    "guardmesh.v1.ReadinessService",
)
GATEWAY_ONLY = {("get", "/openapi.json")}
HTTP_METHODS = ("get", "put", "post", "delete", "patch")

# Streaming HttpBody methods answer bytes the service builds itself; the document's
# schemas for them are compared with these messages instead.
HTTPBODY_RESPONSES = {
    ("post", "/completions"): "guardmesh.v1.CreateCompletionResponse",
}

pytestmark = pytest.mark.skipif(not DESCRIPTOR.is_file(), reason="descriptor set missing: run `make proto`")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def messages() -> dict[str, descriptor_pb2.DescriptorProto]:
    return _messages(_descriptor_set())


@pytest.fixture(scope="module")
def bindings() -> list[tuple[str, str, str, str]]:
    """(http method, path, body, input message full name) per binding of the public services."""
    found = []
    for file in _descriptor_set().file:
        for service in file.service:
            name = f"{file.package}.{service.name}"
            if name not in PUBLIC_SERVICES:
                continue
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for one in (rule, *rule.additional_bindings):
                    kind = one.WhichOneof("pattern")
                    assert kind != "custom", f"{name}.{method.name}: custom verbs are not handled"
                    input_type = method.input_type.lstrip(".")
                    found.append((kind, getattr(one, kind), one.body, input_type))
    return found


def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    # annotations_pb2 / field_behavior_pb2 are imported above so that their option
    # extensions are known when the set is parsed.
    return descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())


def _messages(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        full = f"{prefix}.{message.name}"
        out[full] = message
        for nested in message.nested_type:
            walk(full, nested)

    for file in fds.file:
        for message in file.message_type:
            walk(file.package, message)
    return out


def resolve(spec: dict, node: dict) -> dict:
    """Follows local `$ref`s."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def object_schema(spec: dict, schema: dict) -> dict | None:
    """The object schema inside `schema` (itself, a $ref, or the one object branch of a
    oneOf/anyOf with null), or None if it is not an object."""
    schema = resolve(spec, schema)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            objects = [b for b in (object_schema(spec, s) for s in schema[key]) if b is not None]
            assert len(objects) <= 1, schema
            return objects[0] if objects else None
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    return schema if "object" in types and "properties" in schema else None


def is_map(field: descriptor_pb2.FieldDescriptorProto, messages: dict) -> bool:
    if field.type != field.TYPE_MESSAGE:
        return False
    entry = messages.get(field.type_name.lstrip("."))
    return entry is not None and entry.options.map_entry


def required_fields(message: descriptor_pb2.DescriptorProto) -> set[str]:
    return {
        f.name
        for f in message.field
        if field_behavior_pb2.REQUIRED in f.options.Extensions[field_behavior_pb2.field_behavior]
    }


def compare_message(
    spec: dict,
    schema: dict,
    message_name: str,
    messages: dict,
    *,
    check_required: bool,
    where: str,
    ignore: set[str] = frozenset(),
    extra: dict[str, set[str]] | None = None,
    _at: str = "",
) -> None:
    """The schema's properties are exactly the message's fields (proto names), recursively.

    `ignore`: top-level fields the schema leaves out; `extra`: properties the schema adds
    that no proto field has, keyed by their object's dotted path ("" is the top level)."""
    message = messages[message_name]
    schema = object_schema(spec, schema)
    assert schema is not None, f"{where}: {message_name} has no object schema"
    fields = {f.name: f for f in message.field if not (f.name in ignore and not _at)}
    props = schema["properties"]
    added = (extra or {}).get(_at, set())
    assert set(props) == set(fields) | added, (
        f"{where}: proto {message_name} fields {sorted(fields)} vs schema properties {sorted(props)}"
    )
    if check_required:
        assert set(schema.get("required", [])) == required_fields(message), (
            f"{where}: required {sorted(schema.get('required', []))} vs "
            f"proto REQUIRED {sorted(required_fields(message))}"
        )
    for name, field in fields.items():
        if field.type != field.TYPE_MESSAGE or is_map(field, messages):
            continue
        nested = field.type_name.lstrip(".")
        if nested.startswith("google."):
            continue  # Value / HttpBody: described by hand (string or list)
        item = resolve(spec, props[name])
        if field.label == field.LABEL_REPEATED:
            assert "items" in item, f"{where}.{name}: repeated field without items"
            item = item["items"]
        compare_message(
            spec,
            item,
            nested,
            messages,
            check_required=check_required,
            where=f"{where}.{name}",
            extra=extra,
            _at=f"{_at}.{name}" if _at else name,
        )


def spec_operations(spec: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in spec["paths"].items() for method in item if method in HTTP_METHODS}


def operation(spec: dict, method: str, path: str) -> dict:
    return spec["paths"][path][method]


# --------------------------------------------------------------------------- the document


def test_document_is_valid_openapi(spec):
    import openapi_spec_validator as validator

    validator.validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_every_binding_is_documented_and_nothing_else(spec, bindings):
    from_protos = {(method, path) for method, path, _, _ in bindings}
    documented = spec_operations(spec) - GATEWAY_ONLY
    assert from_protos == documented, (
        f"only in protos: {sorted(from_protos - documented)}; only in the document: {sorted(documented - from_protos)}"
    )
    assert GATEWAY_ONLY <= spec_operations(spec)


def test_request_schemas_match_request_messages(spec, bindings, messages):
    for method, path, body, input_type in bindings:
        op = operation(spec, method, path)
        where = f"{method.upper()} {path}"
        params = {(p["in"], p["name"]): p for p in op.get("parameters", [])}
        path_fields = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        message = messages[input_type]
        if body == "*":
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert op["requestBody"].get("required") is True, where
            compare_message(spec, schema, input_type, messages, check_required=True, where=where)
            assert not params, f"{where}: a body '*' binding takes no query parameters"
        else:
            assert body == "", f"{where}: only body '*' or no body is handled"
            assert "requestBody" not in op, f"{where}: documents a body the binding does not take"
            fields = {f.name for f in message.field}
            documented = {name for (_, name) in params}
            assert documented == fields, f"{where}: fields {sorted(fields)} vs parameters {sorted(documented)}"
            for (where_in, name), param in params.items():
                expected = "path" if name in path_fields else "query"
                assert where_in == expected, f"{where}: {name} should be a {expected} parameter"
                assert param.get("required", False) is (expected == "path"), f"{where}: {name}"


def test_optional_request_fields_accept_null(spec, bindings, messages):
    """Every optional field accepts JSON null (the predictionguard SDK sends it)."""

    def accepts_null(schema: dict) -> bool:
        schema = resolve(spec, schema)
        types = schema.get("type")
        if types == "null" or (isinstance(types, list) and "null" in types):
            return True
        if None in schema.get("enum", []):
            return True
        return any(accepts_null(s) for s in schema.get("oneOf", []) + schema.get("anyOf", []))

    def walk(schema: dict, where: str) -> None:
        schema = object_schema(spec, schema)
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            if name not in required:
                assert accepts_null(prop), f"{where}.{name} does not accept null"
            nested = object_schema(spec, prop)
            if nested is not None:
                walk(nested, f"{where}.{name}")

    for method, path, body, _ in bindings:
        if body == "*":
            op = operation(spec, method, path)
            walk(op["requestBody"]["content"]["application/json"]["schema"], f"{method} {path}")


def test_completion_request_ranges(spec):
    """The documented ranges are DESIGN.md §4's (and the README table's)."""
    props = resolve(spec, {"$ref": "#/components/schemas/CompletionRequest"})["properties"]
    assert (props["temperature"]["minimum"], props["temperature"]["maximum"]) == (0, 2)
    assert (props["top_p"]["exclusiveMinimum"], props["top_p"]["maximum"]) == (0, 1)
    assert props["top_k"]["minimum"] == 0
    for name in ("frequency_penalty", "presence_penalty"):
        assert (props[name]["minimum"], props[name]["maximum"]) == (-2, 2)
    bias = props["logit_bias"]["additionalProperties"]
    assert (bias["minimum"], bias["maximum"]) == (-100, 100)
    string_stop, list_stop, _ = props["stop"]["oneOf"]
    assert string_stop["minLength"] == 1 and list_stop["maxItems"] == 4
    assert list_stop["items"]["minLength"] == 1
    assert (props["n"]["minimum"], props["max_tokens"]["minimum"]) == (1, 1)
    string_prompt, list_prompt = props["prompt"]["oneOf"]
    assert string_prompt["minLength"] == 1 and list_prompt["minItems"] == 1


def test_unary_responses_match_response_messages(spec, messages):
    fds = _descriptor_set()
    for file in fds.file:
        for service in file.service:
            if f"{file.package}.{service.name}" not in PUBLIC_SERVICES:
                continue
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                for one in (rule, *rule.additional_bindings):
                    kind = one.WhichOneof("pattern")
                    key = (kind, getattr(one, kind))
                    output = method.output_type.lstrip(".")
                    if output == "google.api.HttpBody":
                        output = HTTPBODY_RESPONSES[key]
                    schema = operation(spec, *key)["responses"]["200"]
                    schema = resolve(spec, schema)["content"]["application/json"]["schema"]
                    compare_message(
                        spec, schema, output, messages, check_required=False, where=f"{key[0].upper()} {key[1]} 200"
                    )


def test_stream_chunk_schema_matches_completion_chunk(spec, messages):
    # `error` travels as its own event (StreamError), never inside a chunk; each choice
    # carries OpenAI's `logprobs: null`.
    compare_message(
        spec,
        {"$ref": "#/components/schemas/CompletionChunk"},
        "guardmesh.v1.CompletionChunk",
        messages,
        check_required=False,
        where="CompletionChunk",
        ignore={"error"},
        extra={"choices": {"logprobs"}},
    )
    completions = operation(spec, "post", "/completions")["responses"]["200"]["content"]
    assert set(completions) == {"application/json", "text/event-stream"}


def test_errors_are_documented_as_json_error(spec):
    error = resolve(spec, {"$ref": "#/components/schemas/Error"})
    assert error["required"] == ["error"] and error["additionalProperties"] is False
    assert list(error["properties"]) == ["error"]
    assert error["properties"]["error"]["type"] == "string"
    for method, path in spec_operations(spec) - GATEWAY_ONLY:
        responses = operation(spec, method, path)["responses"]
        expected = {"400", "404", "413", "431", "503", "504"}
        if operation(spec, method, path).get("security", spec["security"]):
            expected |= {"401", "403", "429"}
        assert expected <= set(responses), f"{method} {path}: missing {expected - set(responses)}"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                content = resolve(spec, response)["content"]
                assert list(content) == ["application/json"], (method, path, status)
                assert resolve(spec, content["application/json"]["schema"]) is error


def test_security_is_bearer_except_health_and_the_document(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        **spec["components"]["securitySchemes"]["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
    }
    assert spec["security"] == [{"bearerAuth": []}]
    open_routes = {(m, p) for m, p in spec_operations(spec) if operation(spec, m, p).get("security") == []}
    assert open_routes == {("get", "/readyz"), ("get", "/openapi.json")}


# --------------------------------------------------------------------------- served by the gateway


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gateway_serves_the_document_as_json(spec, tmp_path):
    listen, admin = _free_port(), _free_port()
    env = {
        **os.environ,
        "GUARDMESH_LISTEN_PORT": str(listen),
        "GUARDMESH_ADMIN_PORT": str(admin),
        # Nothing listens there: /openapi.json never goes upstream.
        "GUARDMESH_ORCHESTRATOR_PORT": str(_free_port()),
        "GUARDMESH_RUN_DIR": str(tmp_path),
        "GUARDMESH_ENVOY_CONCURRENCY": "1",
    }
    proc = subprocess.Popen([sys.executable, str(START)], env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"envoy exited with {proc.returncode}"
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "envoy did not become ready in 20 s"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{listen}"
        r = httpx.get(f"{base}/openapi.json", timeout=5)  # no key
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == spec
        assert json.loads((tmp_path / "openapi.json").read_bytes()) == spec
        # Other methods on the path are a JSON 405; the route never needs upstream.
        wrong = httpx.post(f"{base}/openapi.json", json={}, timeout=5)
        assert wrong.status_code == 405 and wrong.headers["content-type"] == "application/json"
        assert list(wrong.json()) == ["error"]
        # Upstream routes still go upstream (here: down, so the JSON 503).
        down = httpx.get(f"{base}/readyz", timeout=5)
        assert down.status_code == 503 and list(down.json()) == ["error"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
