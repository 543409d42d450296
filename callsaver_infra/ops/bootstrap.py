"""`callsaver-infra bootstrap`: write an environment's bootstrap template (callsaver_infra.app.bootstrap) and run the
pinned CLI's `cdk bootstrap` with it."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from callsaver_infra.app.bootstrap import (
    CLI_TEMPLATE,
    bootstrap_template,
    load_cli_template,
    qualifier_of,
    toolkit_stack_name,
)
from callsaver_infra.app.config import ConfigError, EnvironmentConfig


def write_template(config: EnvironmentConfig, out_dir: Path, cli_template_path: Path = CLI_TEMPLATE) -> Path:
    """Write the environment's bootstrap template under out_dir (generated, never committed) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bootstrap-{config.name}.template.json"
    path.write_text(json.dumps(bootstrap_template(config, load_cli_template(cli_template_path)), indent=1) + "\n")
    return path


def bootstrap_command(config: EnvironmentConfig, template: Path) -> list[str]:
    """The `cdk bootstrap` that deploys the environment's bootstrap stack from its template."""
    return [
        "cdk", "bootstrap", f"aws://{config.account}/{config.region}",
        "--template", str(template),
        "--qualifier", qualifier_of(config),
        "--toolkit-stack-name", toolkit_stack_name(config),
        "--termination-protection", "true" if config.termination_protection else "false",
    ]  # fmt: skip


def add_parser(commands: Any) -> None:
    """The `bootstrap` subcommand of `callsaver-infra`."""
    cmd = commands.add_parser(
        "bootstrap",
        help="deploy the environment's own CDK bootstrap (toolkit stack CDKToolkit-<env>), which can deploy only "
        "that environment's stacks and resources",
        description="Write the environment's bootstrap template (the pinned CDK CLI's template with a CloudFormation "
        "execution policy scoped to this environment, a permissions boundary for its roles and users, and a deploy "
        "role limited to its stacks) under cdk.out/bootstrap/, then run `cdk bootstrap` with it and the qualifier "
        "of config's [bootstrap]. Needs administrator credentials of the environment's account.",
    )
    cmd.add_argument("--env", required=True, help="environment name (a file under config/)")
    cmd.add_argument("--dry-run", action="store_true", help="write the template, print the command; run nothing")
    cmd.add_argument("--out-dir", type=Path, default=Path("cdk.out/bootstrap"), help="where the template is written")


def run(config: EnvironmentConfig, args: Any) -> int:
    """Run `bootstrap`; returns the exit code."""
    template = write_template(config, args.out_dir)
    command = bootstrap_command(config, template)
    print(f"template: {template}")
    print(f"command: {shlex.join(command)}")
    # The CLI prints its default whenever --cloudformation-execution-policies is absent; this template uses none.
    print(
        "note: the CLI's line \"Using default execution policy of 'arn:aws:iam::aws:policy/AdministratorAccess'\" "
        "does not apply: this template's execution role has no managed policy, only the environment's own"
    )
    if args.dry_run:
        print("dry run: nothing deployed")
        return 0
    cdk = shutil.which("cdk") or shutil.which(str(Path("node_modules/.bin/cdk").resolve()))
    if cdk is None:
        raise ConfigError("the CDK CLI (cdk) is not on PATH; run `make bootstrap ENV=<env>` or `make setup` first")
    sys.stdout.flush()
    return subprocess.run([cdk, *command[1:]], check=False).returncode
