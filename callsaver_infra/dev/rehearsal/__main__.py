"""`python -m callsaver_infra.dev.rehearsal [--env local]` (make rehearse): the local deploy rehearsal."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from callsaver_infra.app.config import ConfigError, load_environments, select_environments
from callsaver_infra.dev.rehearsal.runner import Rehearsal, StepFailed, check_rehearsable

EXIT_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the rehearsal; 0 when every step passed, 1 when a step failed, 2 on usage errors."""
    parser = argparse.ArgumentParser(
        prog="python -m callsaver_infra.dev.rehearsal",
        description="The local deploy rehearsal: starts a local AWS endpoint (moto with callsaver's extension) and a "
        "local LiveKit server on 127.0.0.1, runs `cdk bootstrap` and `cdk deploy --all` with the pinned CLI, checks "
        "the deployed resources with describe calls, runs push-egress --verify, and stops everything. Needs no AWS "
        "account, credentials or Docker. Run it from the repository root. Exit 0 when every step passed, 1 when a "
        "step failed (named in the output), 2 on usage errors.",
    )
    parser.add_argument("--config-dir", type=Path, default=Path("config"), help="environment files (default: config)")
    parser.add_argument(
        "--env", default="local", help="environment to rehearse; must use the local fake account (default: local)"
    )
    args = parser.parse_args(argv)
    try:
        config = select_environments(load_environments(args.config_dir), args.env)[0]
        check_rehearsable(config)
    except (ConfigError, StepFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if not (Path.cwd() / "cdk.json").exists():
        print("error: run the rehearsal from the repository root (where cdk.json is)", file=sys.stderr)
        return EXIT_ERROR
    return Rehearsal(config, Path.cwd()).run()


if __name__ == "__main__":
    sys.exit(main())
