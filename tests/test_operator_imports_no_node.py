"""Operator commands never start Node: neither the CLI nor what its subcommands import loads aws_cdk or jsii
(jsii starts a Node process, ~0.7 s per command, and Node's own warnings would land in the operator's output)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.helpers import CLI_RUN, ROOT

# What `callsaver-infra`'s subcommands import lazily, besides what cli.py imports at the top.
OPERATOR_MODULES = (
    "callsaver_infra.ops.cli",
    "callsaver_infra.ops.push_egress",
    "callsaver_infra.ops.status",
    "callsaver_infra.ops.secrets_admin",
    "callsaver_infra.ops.image_check",
    "callsaver_infra.ops.rotate_egress_key",
    "callsaver_infra.ops.adopt",
)

PROBE = textwrap.dedent(
    """
    import argparse, importlib, json, sys
    for name in MODULES:
        importlib.import_module(name)

    def commands(parser):
        return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})

    top = commands(cli.build_parser())
    helped = [run(["--help"])]
    for name, sub in top.items():
        helped.append(run([name, "--help"]))
        helped += [run([name, inner, "--help"]) for inner in commands(sub)]  # secrets status|set
    # A command that loads and validates every environment file, and stops before any AWS call.
    dry = run(["secrets", "set", "--env", "local", "agent/OPENAI_API_KEY", "--dry-run"], "sk-fake-not-real-0123")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("aws_cdk", "jsii", "constructs"))
    print(json.dumps({"commands": sorted(top), "helped": helped, "dry": dry, "loaded": loaded}))
    """
)


def test_operator_commands_do_not_import_aws_cdk_or_jsii() -> None:
    code = f"MODULES = {OPERATOR_MODULES!r}\n{CLI_RUN}{PROBE}"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    probe = json.loads(result.stdout.splitlines()[-1])
    assert {"push-egress", "secrets", "status"} <= set(probe["commands"])
    assert len(probe["helped"]) >= len(probe["commands"]) + 3 and set(probe["helped"]) == {0}, (
        probe
    )  # every --help ran and exited 0
    assert probe["dry"] == 0  # the config was loaded and validated
    assert probe["loaded"] == []
    assert "node" not in result.stderr.lower()
