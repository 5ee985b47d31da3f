# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit integration bench clean kserve-client

# KServe's Python client, for the Open Inference Protocol conformance tests only, in a virtualenv of its own:
# kserve 0.21 requires protobuf<7, which would downgrade the protobuf 7 this project's onnx needs. The test runs it
# as a subprocess (tests/integration/agent/oip/kserve_client.py); without it that test is skipped, saying so.
KSERVE_VENV ?= .venv-kserve
KSERVE_REQUIREMENTS := tests/integration/agent/oip/kserve-requirements.txt
KSERVE_STAMP := $(KSERVE_VENV)/.installed
export KSERVE_PYTHON := $(abspath $(KSERVE_VENV))/bin/python

# Each install step says what it does before it starts (the first run takes minutes; pip itself is quiet).
$(STAMP): pyproject.toml
	@test -x $(PY) || echo "==> creating the virtualenv $(VENV) (python3 -m venv)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "==> upgrading pip in $(VENV)"
	@$(PY) -m pip install -q --upgrade pip
	@# torch first and pinned: this is the CPU build; an open range would pull a multi-GB CUDA build.
	@echo "==> installing torch 2.13.0 (the CPU build) into $(VENV)"
	@$(PY) -m pip install -q torch==2.13.0
	@echo "==> installing this project (edgectl, edge-agent) and its extras [cpu,train,dev,ansible] into $(VENV)"
	@$(PY) -m pip install -q -e '.[cpu,train,dev,ansible]'
	@touch $(STAMP)
	@echo "==> $(VENV) is ready: $(VENV)/bin/edgectl, $(VENV)/bin/edge-agent (or: source $(VENV)/bin/activate)"

$(KSERVE_STAMP): $(KSERVE_REQUIREMENTS)
	@test -x $(KSERVE_VENV)/bin/python || echo "==> creating the virtualenv $(KSERVE_VENV) for KServe's client (tests only)"
	@test -x $(KSERVE_VENV)/bin/python || python3 -m venv $(KSERVE_VENV)
	@echo "==> installing KServe's client ($(KSERVE_REQUIREMENTS)) into $(KSERVE_VENV)"
	@$(KSERVE_VENV)/bin/python -m pip install -q -r $(KSERVE_REQUIREMENTS)
	@touch $(KSERVE_STAMP)

kserve-client: $(KSERVE_STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgectl demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	cd playbooks && PATH=$(abspath $(VENV))/bin:$$PATH $(abspath $(VENV))/bin/ansible-lint --offline --profile production

# The tests start edgectl and edge-agent as processes hundreds of times; where PYTHONDONTWRITEBYTECODE is set (as on
# the machines this project is tested on now) each would compile the project's modules again: compile them once.
BYTECODE := $(PY) -m compileall -q -j 0 control_plane edge_agent model_builds benchmarks tests > /dev/null

# WORKERS=N runs the tests on N pytest-xdist processes (`make test WORKERS=2`; --dist loadfile keeps a test file on
# one worker, its module-scoped servers start once). Not the default yet: on 2026-12-02 a run on 2 workers took 21
# minutes instead of ~35 but ended at 95% of the collected tests (2,186 of 2,300 reported) with exit status 0: on
# workers, tests/integration/control_plane/test_api_fuzz.py reports 19 of its 125 (schemathesis's parametrized
# cases do not run), and 8 more are not identified. Until that is solved, `make test` runs every test in one process.
WORKERS ?= 0
XDIST := -n $(WORKERS) --dist loadfile

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q $(XDIST)

integration: $(STAMP) $(KSERVE_STAMP)
	@$(BYTECODE)
	$(PY) -m pytest tests/integration -q $(XDIST)

test: lint $(KSERVE_STAMP)
	@$(BYTECODE)
	$(PY) -m pytest -q -rs --durations=25 $(XDIST)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .mypy_cache .ruff_cache .pytest_cache .demo
