"""`callsaver-infra`: operator commands that act on a deployed environment (secrets; the post-deploy hook)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from callsaver_infra.app.config import ConfigError, EnvironmentConfig, load_environments, select_environments
from callsaver_infra.app.names import EnvNames
from callsaver_infra.ops import aws_clients, bootstrap, image_check, push_egress
from callsaver_infra.ops.secrets_admin import (
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

    push = commands.add_parser(
        "push-egress",
        help="after a deploy: push the bucket, region and egress key into the environment's inbound SIP dispatch "
        "rules (automatic recording of inbound calls); idempotent",
        description="Read the deployed stacks' outputs and the egress access key, and write LiveKit's automatic "
        "room recording (audio-only OGG to the environment's bucket) into the environment's inbound SIP dispatch "
        "rules: those whose agents include livekit.worker_name, narrowed by [call_recording] of config/<env>.toml. "
        "Only room_config.egress.room is written; a rule whose other fields LiveKit lists masked is refused. "
        "Nothing is pushed if anything is missing. Exit 0 when done, 1 when a stack, output or secret is not there "
        "yet, 2 on errors (a refused rule, no rule for the agent, a failed --verify).",
    )
    push.add_argument("--env", required=True, help="environment name (a file under config/)")
    push.add_argument(
        "--outputs-file",
        type=_outputs_file,
        metavar="PATH",
        help="stack outputs as written by `cdk deploy --outputs-file` (default: ask CloudFormation)",
    )
    mode = push.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run", action="store_true", help="show the planned change as a diff (credentials masked); push nothing"
    )
    mode.add_argument(
        "--verify",
        action="store_true",
        help="afterwards, record a few seconds of a web page (an audio-only web egress with the same bucket, region "
        "and key) under _healthcheck/ and check the file arrived; it does not place a SIP call",
    )
    push.add_argument(
        "--verify-seconds",
        type=_seconds,
        metavar="SECONDS",
        help="with --verify: how long the test egress records before it is stopped "
        f"(default: {push_egress.VERIFY_RECORD_SECONDS:g}; the local rehearsal uses a fraction of a second)",
    )
    push.add_argument(
        "--accept-blanked-fields",
        action="append",
        default=[],
        metavar="RULE_ID",
        help="write this rule even though LiveKit's listing blanks its sensitive fields (metadata, attributes, "
        "agents' metadata), after checking in the dashboard that they are empty; repeatable",
    )
    push.add_argument(
        "--livekit-url",
        type=_livekit_url,
        metavar="URL",
        help="local rehearsal and tests only (refused unless the environment is the local fake account): talk to "
        "this LiveKit server instead of livekit.url from config",
    )
    push.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        help="local rehearsal and tests only (refused unless the environment is the local fake account): the S3 "
        "endpoint LiveKit uploads to (sets S3Upload.endpoint and path-style addressing)",
    )
    _add_livekit_timeout(push)
    rotate = commands.add_parser(
        "rotate-egress-key",
        help="after bumping egress_writer.access_key_serial and deploying: check and push the new egress key, then "
        "delete the old one once nothing uses it; re-run it any time, it says where the rotation stands",
        description="Walks the rotation of the egress access key from the live state: 1 deployed (the IAM stack holds "
        "config's serial; the old key is kept), 2 checked (the new key is the deployed one, active, and uploads), "
        "3 pushed (push-egress --verify to every dispatch rule of config), 4 retired (the old key is deleted, "
        "refused while any dispatch rule or the agent's injected credentials still use it). Exit 0 when complete, "
        "1 when waiting for a deploy, 2 when a step is refused.",
    )
    rotate.add_argument("--env", required=True, help="environment name (a file under config/)")
    rotate.add_argument("--dry-run", action="store_true", help="say where the rotation stands and what would be done")
    rotate.add_argument(
        "--livekit-url", type=_livekit_url, metavar="URL", help="local rehearsal and tests only (local fake account)"
    )
    rotate.add_argument("--s3-endpoint-url", metavar="URL", help="local rehearsal and tests only (local fake account)")
    adopt = commands.add_parser(
        "adopt-retained",
        help="after a cdk destroy: create each missing stack by importing its retained resources (bucket, bucket "
        "policy and KMS key, read-audit log bucket, secrets, log group), so make deploy can bring the environment "
        "back without losing anything",
        description="For each stack of the environment that is not deployed while its retained resources still "
        "exist, run a CloudFormation IMPORT change set holding exactly those resources, identified by the names "
        "in config (what `cdk import` does). Nothing is created, changed or deleted in them. Then run make deploy. "
        "Needs the synthesized templates: make synth ENV=<env> (or cdk synth -c env=<env>) first.",
    )
    adopt.add_argument("--env", required=True, help="environment name (a file under config/)")
    adopt.add_argument("--assembly", type=Path, default=Path("cdk.out"), help="synthesized assembly (default: cdk.out)")
    adopt.add_argument("--dry-run", action="store_true", help="list what would be imported; change nothing")
    image_check.add_parser(commands)
    bootstrap.add_parser(commands)

    check = commands.add_parser(
        "status",
        help="read-only check of the whole chain (stacks, secrets, agent, LiveKit rules and egresses, recordings); "
        "exit 1 if anything needs attention",
        description="Check one environment without changing anything: the five stacks, every secret (never shown), "
        "the agent service's tasks and last deployment, the LiveKit project's inbound trunks and dispatch rules "
        "(whose each is, where each records), LiveKit's recent egresses, and the newest recording in the bucket. "
        "One line per check, ok or what to run. Exit 0 when all is well, 1 otherwise, 2 on usage errors.",
    )
    check.add_argument("--env", required=True, help="environment name (a file under config/)")
    check.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    check.add_argument(
        "--outputs-file",
        type=_outputs_file,
        metavar="PATH",
        help="stack outputs as written by `cdk deploy --outputs-file` (default: ask CloudFormation)",
    )
    _add_livekit_timeout(check)
    check.add_argument(
        "--livekit-url",
        type=_livekit_url,
        metavar="URL",
        help="local rehearsal and tests only (account 123456789012): check this LiveKit server instead of livekit.url",
    )
    check.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        help="local rehearsal and tests only (account 123456789012): the S3 endpoint the rules are expected to upload "
        "to, as push-egress --s3-endpoint-url wrote it",
    )
    return parser


def _add_livekit_timeout(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--timeout",
        type=_seconds,
        default=push_egress.DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"per LiveKit request, each of up to {push_egress.DEFAULT_RETRY.attempts} attempts "
        f"(default: {push_egress.DEFAULT_TIMEOUT_SECONDS:g})",
    )


def _livekit_url(value: str) -> str:
    if not value.startswith(("http://", "https://", "ws://", "wss://")):
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s):// or ws(s):// URL")
    return value


def _outputs_file(value: str) -> Path:
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{value!r} is a directory; give the JSON file `cdk deploy --outputs-file` wrote, "
            "e.g. cdk.outputs.<env>.json"
        )
    if path.exists() and not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{value!r} is not readable")
    return path


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 300:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds between 0 and 300")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        envs = load_environments(args.config_dir)
        config = select_environments(envs, args.env)[0]
        if args.command == "secrets" and args.secrets_command == "status":
            return _secrets_status(config)
        if args.command == "secrets" and args.secrets_command == "set":
            return _secrets_set(config, args.secret, dry_run=args.dry_run)
        if args.command == "push-egress":
            return _push_egress(config, args, tuple(envs.values()))
        if args.command == "check-image":
            return image_check.run(config, args, lambda service: aws_client(service, config))
        if args.command == "bootstrap":
            return bootstrap.run(config, args)
        if args.command == "rotate-egress-key":
            return _rotate_egress_key(config, args)
        if args.command == "adopt-retained":
            return _adopt_retained(config, args)
        if args.command == "status":
            return _status(config, args, tuple(envs.values()))
    except push_egress.NotReadyError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NOT_READY
    except (ConfigError, SecretsError, push_egress.HookError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # botocore's credential and connection errors: say what, never dump a traceback
        if type(e).__module__.startswith("botocore"):
            print(f"error: AWS: {e}", file=sys.stderr)
            return EXIT_ERROR
        raise
    raise AssertionError("unreachable: argparse requires a command")


def aws_client(service: str, config: EnvironmentConfig) -> Any:
    """An AWS client (botocore's, as boto3 builds it) in the environment's region."""
    return aws_clients.client(service, region_name=config.region)


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
    name = EnvNames(config.name).secret(ref)
    if dry_run:
        print(f"dry run: would set {name} ({len(value)} characters); nothing changed")
        return EXIT_OK
    version = set_secret(aws_client("secretsmanager", config), config, spec, value)
    print(f"set {name} ({len(value)} characters, version {version[:8]})")
    return EXIT_OK


def _push_egress(config: EnvironmentConfig, args: argparse.Namespace, envs: tuple[EnvironmentConfig, ...]) -> int:
    if args.verify_seconds is not None and not args.verify:
        raise push_egress.HookError("--verify-seconds sets how long --verify records: give it with --verify")
    options = push_egress.HookOptions(
        outputs_file=args.outputs_file,
        dry_run=args.dry_run,
        verify=args.verify,
        verify_seconds=push_egress.VERIFY_RECORD_SECONDS if args.verify_seconds is None else args.verify_seconds,
        livekit_url=args.livekit_url,
        s3_endpoint_url=args.s3_endpoint_url,
        timeout=args.timeout,
        retry=push_egress.DEFAULT_RETRY,
        project_envs=envs,
        accept_blanked=tuple(args.accept_blanked_fields),
    )
    push_egress.run_hook(config, options, lambda service: aws_client(service, config))
    return EXIT_OK


def _rotate_egress_key(config: EnvironmentConfig, args: argparse.Namespace) -> int:
    from callsaver_infra.ops.rotate_egress_key import Rotation, RotationOptions

    options = RotationOptions(dry_run=args.dry_run, livekit_url=args.livekit_url, s3_endpoint_url=args.s3_endpoint_url)
    # The same refusal as push-egress's, before the rotation reads anything from LiveKit: HookError, exit 2.
    push_egress.check_local_overrides(
        config, push_egress.HookOptions(livekit_url=args.livekit_url, s3_endpoint_url=args.s3_endpoint_url)
    )
    return Rotation(config, options, lambda service: aws_client(service, config)).run()


def _adopt_retained(config: EnvironmentConfig, args: argparse.Namespace) -> int:
    from callsaver_infra.ops.adopt import AdoptError, adopt

    try:
        adopt(config, args.assembly, lambda service: aws_client(service, config), dry_run=args.dry_run)
    except AdoptError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _status(config: EnvironmentConfig, args: argparse.Namespace, envs: tuple[EnvironmentConfig, ...]) -> int:
    from callsaver_infra.ops import status

    options = status.StatusOptions(
        outputs_file=args.outputs_file,
        livekit_url=args.livekit_url,
        s3_endpoint_url=args.s3_endpoint_url,
        timeout=args.timeout,
    )
    status.check_local_overrides(config, options)  # HookError: exit 2
    # Environments of the same LiveKit project: whose each dispatch rule is.
    project = tuple(e for e in envs if e.livekit.url == config.livekit.url)
    ctx = status.StatusContext(config, project, lambda service: aws_client(service, config), options)
    checks = status.run_status(ctx)
    print(status.report_json(ctx, checks) if args.json else status.format_report(ctx, checks))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_NOT_READY


def run(argv: Sequence[str] | None = None) -> None:
    """Console-script wrapper."""
    sys.exit(main(argv))


if __name__ == "__main__":
    run()
