# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit integration bench clean

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

demo: $(STAMP)
	$(VENV)/bin/edgectl demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	cd playbooks && PATH=$(abspath $(VENV))/bin:$$PATH $(abspath $(VENV))/bin/ansible-lint --offline --profile production

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

integration: $(STAMP)
	$(PY) -m pytest tests/integration -q

test: lint
	$(PY) -m pytest -q -rs

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo
