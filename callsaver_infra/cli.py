"""`callsaver-infra`: operator commands that act on a deployed environment (secrets; the post-deploy hook)."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from callsaver_infra.config import ConfigError, EnvironmentConfig, load_environments, select_environments
from callsaver_infra.secrets_admin import (
    SecretsError,
    check_settable,
    format_statuses,
    secret_statuses,
    set_secret,
    validate_value,
)

EXIT_OK, EXIT_NOT_READY, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The command line: `callsaver-infra secrets status|set ...`."""
    parser = argparse.ArgumentParser(
        prog="callsaver-infra",
        description="Operate CallSaver's deployed environments. AWS credentials and endpoint come from the usual "
        "AWS environment (AWS_PROFILE, AWS_ENDPOINT_URL, ...); the region comes from config/<env>.toml.",
    )
    parser.add_argument("--config-dir", type=Path, default=Path("config"), help="environment files (default: config)")
    commands = parser.add_subparsers(dest="command", required=True)

    secrets = commands.add_parser("secrets", help="check or set the environment's secrets (values are never shown)")
    secret_commands = secrets.add_subparsers(dest="secrets_command", required=True)
    status = secret_commands.add_parser(
        "status", help="show whether every required secret is set; exit 1 if any is missing or a placeholder"
    )
    status.add_argument("--env", required=True, help="environment name (a file under config/)")
    setter = secret_commands.add_parser(
        "set", help="set one secret, reading the value from standard input (hidden when typed at a terminal)"
    )
    setter.add_argument("--env", required=True, help="environment name (a file under config/)")
    setter.add_argument("secret", help="namespace/KEY, e.g. agent/OPENAI_API_KEY")
    setter.add_argument("--dry-run", action="store_true", help="check everything but change nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = select_environments(load_environments(args.config_dir), args.env)[0]
        if args.command == "secrets" and args.secrets_command == "status":
            return _secrets_status(config)
        if args.command == "secrets" and args.secrets_command == "set":
            return _secrets_set(config, args.secret, dry_run=args.dry_run)
    except (ConfigError, SecretsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # botocore's credential and connection errors: say what, never dump a traceback
        if type(e).__module__.startswith("botocore"):
            print(f"error: AWS: {e}", file=sys.stderr)
            return EXIT_ERROR
        raise
    raise AssertionError("unreachable: argparse requires a command")


def aws_client(service: str, config: EnvironmentConfig) -> Any:
    """A boto3 client in the environment's region."""
    import boto3

    return boto3.client(service, region_name=config.region)


def _secrets_status(config: EnvironmentConfig) -> int:
    statuses = secret_statuses(aws_client("secretsmanager", config), config)
    print(format_statuses(config, statuses))
    return EXIT_OK if all(s.ok for s in statuses) else EXIT_NOT_READY


def _secrets_set(config: EnvironmentConfig, ref: str, *, dry_run: bool) -> int:
    spec = check_settable(config, ref)
    if sys.stdin.isatty():
        raw = getpass.getpass(f"Value for {ref} in {config.name} (input hidden): ")
    else:
        raw = sys.stdin.read()
    value = validate_value(ref, raw)
    name = f"callsaver/{config.name}/{ref}"
    if dry_run:
        print(f"dry run: would set {name} ({len(value)} characters); nothing changed")
        return EXIT_OK
    version = set_secret(aws_client("secretsmanager", config), config, spec, value)
    print(f"set {name} ({len(value)} characters, version {version[:8]})")
    return EXIT_OK


def run() -> None:
    """Console-script wrapper."""
    sys.exit(main())


if __name__ == "__main__":
    run()
