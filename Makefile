# The two commands a new user runs: `make demo` and `make test`. Both create .venv when it
# is missing and only reinstall when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision pins that match the wheels on the project's machines (a CUDA build
# that also runs on CPU); override with `make TORCH_SPEC=... test`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-slow lint clean

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip >/dev/null
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev,onnx]'
	touch $@

demo: $(VENV)/.installed-dev
	$(VENV)/bin/resnets info resnet56
	$(PY) scripts/demo.py

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
