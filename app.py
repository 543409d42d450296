#!/usr/bin/env python3
"""CDK entry point: `cdk synth -c env=staging` builds one environment, no `env` builds them all, the CI stack and the
registry stack.

With `-c env=X` the stacks are top-level, so `cdk deploy --all -c env=X` (make deploy) deploys exactly X. Without
it, each environment (and the CI and registry stacks) sits in a Stage named after it: the CLI's `--all` selects only
top-level stacks, so a bare `cdk deploy --all` selects nothing, never production; `cdk synth` and `cdk list` still
show all.

Context: `env` (one environment, `ci` for the CI stack alone, `registry` for the registry stack alone),
`agentImageTag` (a hotfix: the agent image tag to deploy instead of config's), `registryFor` (with `env=registry`:
place the registry in that environment's account and region), `ciConfig` (another CI file than
config/ci/github.toml, e.g. a test fixture).

The only place that reads the outside world (context, files, environment); everything below receives typed config.

aws-cdk-lib's built-in CloudFormation validation runs through a memo (callsaver_infra/app/validation_memo.py) in
.cache/cfn-validate/ (or CALLSAVER_CFN_VALIDATE_MEMO_DIR): a template validated before is not validated again.
CALLSAVER_CFN_VALIDATE_MEMO=off runs the built-in itself (a cold, full validation); CDK_VALIDATION=false
(`cdk synth --no-validation`) turns validation off entirely.
"""

from __future__ import annotations

# ruff: noqa: E402 (the collector is switched off before the imports below, which allocate most of the objects)
import gc

# A synth is one short process that creates ~200,000 objects, most of them while importing aws-cdk-lib's generated
# modules, and keeps nearly all of them until it exits: the cyclic collector's ~300 passes over them free next to
# nothing yet cost ~0.1 CPU-s, a tenth of the Python side. Reference counting still frees everything else.
gc.disable()

import os
import sys
from pathlib import Path

from aws_cdk import App, Stage

from callsaver_infra.app.cdk_context import cli_context
from callsaver_infra.app.ci_config import (
    CI_CONFIG_FILE,
    CI_ENV_NAME,
    check_reserved_environment_names,
    load_ci_config,
    placeholder_problem,
)
from callsaver_infra.app.config import ConfigError, load_environments, select_environments, with_image_tag
from callsaver_infra.app.registry_config import (
    REGISTRY_CONFIG_FILE,
    REGISTRY_ENV_NAME,
    check_reserved_registry_name,
    load_registry_config,
    registry_for,
)

PROJECT_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PROJECT_DIR / "config"
# "off": validate every template afresh with the built-in plugin itself.
MEMO_SWITCH = "CALLSAVER_CFN_VALIDATE_MEMO"
# Another directory for the memo (tests use an empty one for a cold run).
MEMO_DIR_VAR = "CALLSAVER_CFN_VALIDATE_MEMO_DIR"


def main() -> None:
    # cdk.json's context as defaults: `python app.py` without the CLI gets the same feature flags (the CLI's
    # CDK_CONTEXT_JSON, when present, overrides them with the same values and any -c).
    # The memo replaces the built-in only where the built-in would run (aws-cdk-lib's defaultValidationEnabled:
    # CDK_VALIDATION, which `cdk synth --no-validation` sets, is exactly "false" to turn it off).
    validation = os.environ.get("CDK_VALIDATION") != "false"
    switch = os.environ.get(MEMO_SWITCH, "on")
    if switch not in ("on", "off"):
        print(f"error: {MEMO_SWITCH}={switch!r}: set 'off' (validate afresh) or 'on' (the default)", file=sys.stderr)
        sys.exit(2)
    memo = validation and switch == "on"
    app = App(context=cli_context(PROJECT_DIR), builtin_cloud_formation_validation=not memo)
    try:
        all_envs = load_environments(CONFIG_DIR)
        check_reserved_environment_names(CONFIG_DIR, all_envs)
        wanted = app.node.try_get_context("env")
        # The CI stack (GitHub OIDC roles) comes with every environment, or alone with -c env=ci.
        ci_path = Path(app.node.try_get_context("ciConfig") or CONFIG_DIR / CI_CONFIG_FILE)
        ci = load_ci_config(ci_path, all_envs) if wanted in (None, CI_ENV_NAME) else None
        problem = placeholder_problem(ci_path, ci) if ci is not None else None
        if problem and wanted == CI_ENV_NAME:
            raise ConfigError(problem)
        if problem:
            # Fail closed without blocking the environments: the CI stack is left out, so it cannot be deployed.
            print(f"warning: the CI stack ({CI_ENV_NAME}) is not synthesized: {problem}", file=sys.stderr)
            ci = None
        check_reserved_registry_name(CONFIG_DIR, all_envs)
        # The registry stack (the agent's ECR repository) comes with every environment, or alone with -c env=registry.
        registry = (
            load_registry_config(CONFIG_DIR / REGISTRY_CONFIG_FILE, all_envs)
            if wanted in (None, REGISTRY_ENV_NAME)
            else None
        )
        placed_for = app.node.try_get_context("registryFor")
        if registry is not None and placed_for is not None:
            registry = registry_for(registry, select_environments(all_envs, str(placed_for))[0])
        envs = [] if wanted in (CI_ENV_NAME, REGISTRY_ENV_NAME) else select_environments(all_envs, wanted)
        # Config's agent.image_tag is what deploys; -c agentImageTag=<tag> is the explicit hotfix override.
        image_tag = app.node.try_get_context("agentImageTag")
        if image_tag is not None:
            envs = [with_image_tag(config, str(image_tag)) for config in envs]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    # The stacks (most of aws-cdk-lib's modules) load only now: a refused config or context answers in about a
    # third of the time.
    from callsaver_infra.app.environment import add_environment
    from callsaver_infra.app.nag import enable_policy_checks
    from callsaver_infra.app.stacks.ci import add_ci_stack
    from callsaver_infra.app.stacks.registry import add_registry_stack
    from callsaver_infra.app.validation_memo import PROJECT_MEMO_DIR, enable_memoized_validation

    # One environment asked for: top-level stacks. All of them: one Stage each, out of `--all`'s reach.
    staged = wanted is None
    for config in envs:
        add_environment(Stage(app, config.name) if staged else app, config)
    if ci is not None:
        add_ci_stack(Stage(app, CI_ENV_NAME) if staged else app, ci, all_envs)
    if registry is not None:
        add_registry_stack(Stage(app, REGISTRY_ENV_NAME) if staged else app, registry)
    if memo:
        memo_dir = Path(os.environ.get(MEMO_DIR_VAR) or PROJECT_DIR / PROJECT_MEMO_DIR)
        enable_memoized_validation(app, memo_dir, enable_policy_checks)
    else:
        enable_policy_checks(app)
    app.synth()


if __name__ == "__main__":
    main()
