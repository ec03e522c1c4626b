# The two commands a new user runs: `make demo` and `make test`. Both create .venv when it
# is missing and only reinstall when pyproject.toml changes.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch/torchvision pins that match the wheels on the project's machines (a CUDA build
# that also runs on CPU); override with `make TORCH_SPEC=... test`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The extras both `make demo` and `make test` install (onnx, serve and openvino are
# optional for users; tests of a missing one skip).
EXTRAS ?= dev,onnx,serve,browser,openvino

.PHONY: demo test test-slow lint clean chromium

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip >/dev/null
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[$(EXTRAS)]'
	touch $@

demo: $(VENV)/.installed-dev
	$(VENV)/bin/resnets info resnet56
	$(PY) scripts/demo.py

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

# The browser test drives Debian's chromium (Playwright's own browser download is not
# reachable on the project's machines). Installed when missing (as root, or with sudo);
# without it the test skips locally, and under CI (CI set) this target fails.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	    sudo apt-get install -y -q chromium >/dev/null; \
	  fi; \
	  command -v chromium >/dev/null || { \
	    echo "chromium is missing: apt-get install -y chromium (the browser test needs it)"; \
	    [ -z "$$CI" ]; }; }

# Tests run on up to 4 processes (pytest-xdist), one torch thread each (tests/conftest.py):
# most tests are single-threaded or wait on a child process, so on the project's 2-core
# machine two workers take 4:38 where one took 6:54 (same 886 tests).
test: lint chromium
	$(PY) -m pytest -q -n auto --maxprocesses 4 --durations=30

test-slow: $(VENV)/.installed-dev chromium
	$(PY) -m pytest -q -m slow --timeout 3600

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
