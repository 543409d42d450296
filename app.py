#!/usr/bin/env python3
"""CDK entry point: `cdk synth -c env=staging` builds one environment, no `env` builds them all.

Context: `env` (one environment), `agentImageTag` (the agent image tag to deploy, overriding config).

The only place that reads the outside world (context, files); everything below receives typed config.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aws_cdk import App

from callsaver_infra.assembly import add_environment
from callsaver_infra.config import ConfigError, load_environments, select_environments, with_image_tag
from callsaver_infra.nag import enable_policy_checks

CONFIG_DIR = Path(__file__).resolve().parent / "config"


def main() -> None:
    app = App()
    try:
        envs = select_environments(load_environments(CONFIG_DIR), app.node.try_get_context("env"))
        # CI deploys the image it built for the commit: -c agentImageTag=<sha> overrides config's image_tag.
        image_tag = app.node.try_get_context("agentImageTag")
        if image_tag is not None:
            envs = [with_image_tag(config, str(image_tag)) for config in envs]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for config in envs:
        add_environment(app, config)
    enable_policy_checks(app)
    app.synth()


if __name__ == "__main__":
    main()
