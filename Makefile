# Quarterdeck: `make up` runs it on embedded defaults, `make test` runs the suite.
# Both install what they need: the venv, pip packages, and missing Debian packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
# libpango…fonts-dejavu-core: what WeasyPrint loads to print the monthly report as PDF.
APT_PACKAGES := redis-server prometheus prometheus-alertmanager bubblewrap socat chromium \
  libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 libfontconfig1 fonts-dejavu-core
APT_STAMP := $(VENV)/.apt-installed

.PHONY: up test test-unit test-integration test-e2e test-chaos lint typecheck bench install deps clean help claude-code

help:
	@echo "make up      - run Quarterdeck (API :8080, metrics :9090, embedded Postgres)"
	@echo "make test    - lint, type-check and run all tests"
	@echo "make bench   - run benchmarks; writes benchmarks/results/*.json"
	@echo "make test-chaos - fault-injection scenarios against a local deployment"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests drive for real (Redis, Prometheus/promtool, Alertmanager/amtool).
$(APT_STAMP): Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v kubectl >/dev/null 2>&1 || { \
	  echo "installing kubectl (Debian kubernetes-client)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq kubernetes-client; }
	@mkdir -p $(VENV) && touch $(APT_STAMP)

# The real Claude Code CLI, pinned: 2.1.197 is the newest that runs on Debian's Node 20. The gateway
# tests drive it; npm ships its native binary inside the registry package (nothing else is fetched).
CLAUDE_CODE_VERSION := 2.1.197
CLAUDE := $(VENV)/claude-code/node_modules/.bin/claude
$(CLAUDE):
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian packages: nodejs npm"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends nodejs npm; }
	npm install --no-audit --no-fund --loglevel=error --prefix $(VENV)/claude-code \
	  @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	@$(CLAUDE) --version || { rm -f $(CLAUDE); exit 1; }  # a failed postinstall leaves a stub

# `make up` installs the CLI too, so a fresh machine gets a working claude-code agent type; but
# when that fails (offline, no npm) it only warns and starts anyway: the agent type is then
# listed as unavailable, with the reason (GET /v1/agent-types, `quarterdeck doctor`).
claude-code:
	@$(MAKE) --no-print-directory --silent $(CLAUDE) || echo "warning: the Claude Code CLI could not be \
	installed; the claude-code agent type is unavailable until \`make deps\` succeeds" >&2

deps: $(STAMP) $(APT_STAMP) $(CLAUDE)

up: $(STAMP) claude-code
	$(BIN)/quarterdeck up

# Lint, formatting, and the floors of ARCHITECTURE.md (import-linter; see pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Everything, the six chaos scenarios included (about 3 of the minutes); `make test-chaos` runs
# only those. The unit tests (in-process, about a minute of one core) run beside the chaos
# scenarios, which mostly wait on faults and recoveries and assert outcomes, never timings; the
# rest runs after both, alone. Any failure fails the target (each part's output is printed).
# Run after the unit tests, beside the chaos scenarios (which mostly wait on faults): the
# dashboard's tests (its pages in process, Chromium against a running server) and the monitoring
# bundle's (promtool, a real Prometheus). Together they end about when the chaos scenarios do.
SIDE_TESTS := $(wildcard tests/integration/test_ui_*.py) tests/e2e/test_ui_browser.py \
  tests/integration/test_deploy_monitoring.py tests/integration/test_prometheus_scrape.py
# Run in the end-to-end tests' process (which mostly waits on the processes it starts), not
# with the other integration tests, so the two halves end together: these render manifests
# with kubectl, or drive a server process of their own.
BESIDE_E2E := tests/integration/test_deploy_kubernetes.py tests/integration/test_deploy_scaling.py \
  tests/integration/test_openapi_conformance.py

test: deps lint typecheck
	@unit_log=$$(mktemp); ui_log=$$(mktemp); e2e_log=$$(mktemp); rcs=$$(mktemp -d); \
	( $(BIN)/pytest -q -p no:cacheprovider tests/unit > $$unit_log 2>&1; echo $$? > $$rcs/unit; \
	  $(BIN)/pytest -q -p no:cacheprovider --durations=8 $(SIDE_TESTS) > $$ui_log 2>&1; \
	  echo $$? > $$rcs/ui ) & side=$$!; \
	chaos=0; $(BIN)/pytest -q -p no:cacheprovider --durations=8 tests/e2e/test_chaos.py || chaos=$$?; \
	wait $$side; units=$$(cat $$rcs/unit); ui=$$(cat $$rcs/ui); \
	echo "--- tests/unit (run beside the chaos scenarios)"; cat $$unit_log; \
	echo "--- the dashboard's and monitoring tests (beside the chaos scenarios, after the unit tests)"; \
	cat $$ui_log; \
	( $(BIN)/pytest -q -p no:cacheprovider --durations=15 tests/e2e $(BESIDE_E2E) \
	    --ignore=tests/e2e/test_chaos.py $(foreach t,$(SIDE_TESTS),--ignore=$(t)) > $$e2e_log 2>&1; \
	  echo $$? > $$rcs/e2e ) & e2e_pid=$$!; \
	rest=0; $(BIN)/pytest -q -p no:cacheprovider --durations=25 tests \
	  --ignore=tests/unit --ignore=tests/e2e \
	  $(foreach t,$(SIDE_TESTS) $(BESIDE_E2E),--ignore=$(t)) || rest=$$?; \
	wait $$e2e_pid; e2e=$$(cat $$rcs/e2e); \
	echo "--- tests/e2e (beside the integration tests: they mostly wait on the processes they start)"; \
	cat $$e2e_log; rm -rf $$unit_log $$ui_log $$e2e_log $$rcs; \
	echo "exit codes: chaos $$chaos, unit $$units, side $$ui, integration $$rest, e2e $$e2e"; \
	[ $$chaos -eq 0 ] && [ $$units -eq 0 ] && [ $$ui -eq 0 ] && [ $$rest -eq 0 ] && [ $$e2e -eq 0 ]

test-chaos: deps
	$(BIN)/pytest -q -p no:cacheprovider -m chaos tests/e2e/test_chaos.py

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test-integration: deps
	$(BIN)/pytest -q tests/integration

test-e2e: deps
	$(BIN)/pytest -q tests/e2e

bench: deps
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
