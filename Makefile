# callsaver-infra: every command sets up what it needs first (Python venv, pinned CDK CLI and Node from npm).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The pinned CLI and Node 22 (npm package `node`) come first, so jsii and `cdk` never run on the machine's Node.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := true

ENV ?=
ENV_CONTEXT := $(if $(ENV),-c env=$(ENV))
# Extra CDK CLI arguments for synth/diff/deploy, e.g. CDK_ARGS="--app cdk.out --require-approval never" (CI).
CDK_ARGS ?=

.PHONY: help setup rehearse rehearse-lifecycle synth test snapshot-update lint docs bench bench-hook bootstrap diff deploy status constraints clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: $(VENV)/.installed node_modules/.installed ## Install the pinned Python and npm dependencies

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

rehearse: setup ## Deploy every stack into a local AWS endpoint, check it, run the hook, tear down (no AWS needed)
	$(PY) -m callsaver_infra.dev.rehearsal

rehearse-lifecycle: setup ## Rehearse deploy, operator secrets, recorded calls, update with key rotation, destroy (local)
	$(PY) -m callsaver_infra.dev.rehearsal.lifecycle

synth: setup ## Synthesize and validate every environment (or ENV=name) into cdk.out
	rm -rf cdk.out
	cdk synth --quiet $(ENV_CONTEXT) $(CDK_ARGS)
	# With ENV the templates are at the top of cdk.out; without, each environment's are in its Stage's assembly-<env>/.
	cfn-lint 'cdk.out/**/*.template.json'
	@echo "cdk-nag: $$($(PY) -c 'import json; rs = json.load(open("cdk.out/validation-report.json"))["pluginReports"]; print("; ".join("%s %s - %d findings, %d acknowledged" % (r["pluginName"], r["conclusion"], len(r["violations"]), len(r["suppressedViolations"])) for r in rs))')"
	@echo "cfn-lint: no errors or warnings"
	@find cdk.out -name '*.template.json' | sort

test: setup ## Run the test suite
	$(PY) -m pytest

snapshot-update: setup ## Rewrite the template snapshots after a reviewed change
	$(PY) -m pytest tests/test_snapshots.py --snapshot-update

lint: setup ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy callsaver_infra app.py tools

docs: setup ## Regenerate docs/configuration.md from the config models' field descriptions
	$(PY) tools/config_reference.py

# One line per benchmark script; each prints its figures (the speed figures beside issue 13's targets first).
bench: setup ## Print the speed figures beside their targets (synth vs empty app, test suite, rehearse, push-egress)
	$(PY) benchmarks/synth_bench.py
	$(PY) benchmarks/cost_bench.py

bench-hook: setup ## Print push-egress timings against the local LiveKit server and moto
	$(PY) benchmarks/hook_bench.py

bootstrap: setup ## Deploy one environment's own CDK bootstrap (admin credentials): make bootstrap ENV=staging [DRY_RUN=1]
	@test -n "$(ENV)" || { echo "usage: make bootstrap ENV=<environment> [DRY_RUN=1]"; exit 2; }
	$(VENV)/bin/callsaver-infra bootstrap --env $(ENV) $(if $(DRY_RUN),--dry-run)

diff: setup ## cdk diff against the real account (needs AWS credentials): make diff ENV=staging
	@test -n "$(ENV)" || { echo "usage: make diff ENV=<environment>"; exit 2; }
	cdk diff $(ENV_CONTEXT) 'Callsaver-*-$(ENV)' $(CDK_ARGS)

deploy: setup ## Deploy one environment: base stacks, secrets check, agent, then the post-deploy hook: make deploy ENV=staging
	@test -n "$(ENV)" || { echo "usage: make deploy ENV=<environment>"; exit 2; }
	$(VENV)/bin/callsaver-infra check-image --env $(ENV) --cdk-args="$(CDK_ARGS)"
	# 1. What the agent needs first: bucket, egress identity, secrets (placeholders on a first deploy).
	cdk deploy Callsaver-Storage-$(ENV) Callsaver-IAM-$(ENV) Callsaver-Secrets-$(ENV) $(ENV_CONTEXT) $(CDK_ARGS)
	# 2. No agent with placeholder keys: it could not reach LiveKit and the circuit breaker would roll it back.
	@$(VENV)/bin/callsaver-infra secrets status --env $(ENV) || { \
	  echo "make deploy: stopped before Callsaver-Agent-$(ENV): set the secrets marked above with the commands shown,"; \
	  echo "then run make deploy ENV=$(ENV) again (the stacks deployed so far keep what they hold)."; exit 1; }
	# 3. The agent (and everything else of the environment), then the push of the recording settings to LiveKit.
	cdk deploy --all $(ENV_CONTEXT) --outputs-file cdk.outputs.$(ENV).json $(CDK_ARGS)
	$(VENV)/bin/callsaver-infra push-egress --env $(ENV) --outputs-file cdk.outputs.$(ENV).json

status: setup ## Check one environment end to end, read-only (needs AWS credentials): make status ENV=staging
	@test -n "$(ENV)" || { echo "usage: make status ENV=<environment>"; exit 2; }
	$(VENV)/bin/callsaver-infra status --env $(ENV)

constraints: ## Re-pin every Python package from a fresh venv
	rm -rf /tmp/callsaver-constraints && $(PYTHON) -m venv /tmp/callsaver-constraints
	/tmp/callsaver-constraints/bin/pip install --quiet -e '.[dev]'
	{ echo '# Every Python package of the dev environment, pinned (pip freeze of a fresh `make setup`). Regenerate with `make constraints`.'; \
	  /tmp/callsaver-constraints/bin/pip freeze --exclude-editable | grep -v '^pip=='; } > constraints.txt

clean: ## Remove build output (keeps the venv and node_modules)
	rm -rf cdk.out .pytest_cache
