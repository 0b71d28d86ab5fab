# zfarm: `make demo` and `make test` work from a fresh clone; both install what they need first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch by default; on a machine with an NVIDIA driver, the default (CUDA) build.
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch,torch==2.13.0)

.PHONY: install test-tools demo test screenshots lint format up clean client

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "zfarm needs Python >= 3.11, found " + sys.version)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"   # dev = worker + server + the test tools
	$(BIN)/python scripts/generate_sync_client.py  # the sync client, from the async source (not in git)
	touch $@

demo: install
	$(BIN)/python scripts/generate_sync_client.py
	$(BIN)/zfarm demo

# The browser tests drive Debian's Chromium through Playwright (Playwright downloads no browser here), and
# compose.yaml is checked by Docker Compose where a docker client is present. Installed only when missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
test-tools:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser tests ..."; \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null) \
	    || echo "WARNING: could not install chromium: the browser tests will be skipped"; \
	else echo "WARNING: no chromium and no apt-get: the browser tests will be skipped"; fi
	@# promtool checks the alert rules: taken from Debian's prometheus package without installing the server
	@if ! command -v promtool >/dev/null 2>&1 && [ ! -x $(BIN)/promtool ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "extracting promtool from Debian's prometheus package for the alert-rule tests ..."; \
	  tmp=$$(mktemp -d) && (cd $$tmp && (apt-get download prometheus >/dev/null 2>&1 \
	    || ($(SUDO) apt-get update -qq && apt-get download prometheus >/dev/null)) \
	    && dpkg-deb -x prometheus_*.deb x && cp x/usr/bin/promtool $(CURDIR)/$(BIN)/promtool) \
	    || echo "WARNING: no promtool: the alert-rule checks will be skipped"; rm -rf $$tmp; \
	fi
	@if command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1 \
	    && ! command -v docker-compose >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing docker-compose to validate compose.yaml ..."; \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq docker-compose >/dev/null) \
	    || echo "WARNING: could not install docker-compose: compose.yaml is checked structurally only"; \
	fi

test: install test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/generate_sync_client.py        # the sync client, from the async source
	$(BIN)/lint-imports                                  # the package graph (pyproject: [tool.importlinter])
	$(BIN)/mypy                                          # types; strict on the lifecycle, client and kernel
	$(BIN)/python -m pytest -q -ra

# The sync client (zfarm/client/_sync/client.py, not in git) is generated from the async source.
client: install
	$(BIN)/python scripts/generate_sync_client.py

# Pictures of the web page and Flower for the docs (tiny test model: the images in them are noise).
# An embedded Redis keeps other farms on this machine out of Flower's view.
screenshots: install test-tools
	ZFARM_SCREENSHOTS=docs/screenshots ZFARM_TEST_REDIS_URL=redis://127.0.0.1:1/0 \
	  $(BIN)/python -m pytest -q tests/e2e/observe/test_web_page.py tests/e2e/observe/test_web_photos.py \
	  tests/e2e/observe/test_review_board.py \
	  tests/e2e/observe/test_flower_browser.py

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

up: install
	$(BIN)/zfarm up

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
