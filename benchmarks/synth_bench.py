#!/usr/bin/env python3
"""Print, in one run: the median wall time of synthesizing every environment next to an empty CDK app, the test
suite's wall time, and the cost-bearing resources of each environment read from the synthesized templates.

Each synth sample is a fresh Python process (jsii starts its Node runtime every time, as `cdk synth` does). The
cost table (NAT gateways, load balancers, interface VPC endpoints, Fargate tasks at desired count; alarms and the
metrics they evaluate, dashboards, S3 request-metrics configurations, KMS keys) lets a reviewer see cost drift next
to the timings.
Usage: python benchmarks/synth_bench.py [--runs N] [--skip-tests]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EMPTY_APP = "import aws_cdk; aws_cdk.App().synth()"


def _context() -> str:
    # What the CDK CLI hands app.py: cdk.json's context plus its own defaults.
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    return json.dumps({"aws:cdk:enable-path-metadata": True, "aws:cdk:enable-asset-metadata": True, **context})


def _time(argv: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as outdir:
            env = {**os.environ, "CDK_OUTDIR": outdir, "CDK_CONTEXT_JSON": _context()}
            start = time.perf_counter()
            subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
            samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="samples per case (default 5)")
    parser.add_argument("--skip-tests", action="store_true", help="do not time the test suite")
    args = parser.parse_args()
    envs = sorted(p.stem for p in (ROOT / "config").glob("*.toml"))
    cases = {
        "empty CDK app": [sys.executable, "-c", EMPTY_APP],
        f"callsaver-infra, all environments ({', '.join(envs)}) + CI": [sys.executable, "app.py"],
    }
    print(f"synth wall time, median of {args.runs} fresh processes (node {_node_version()})")
    medians = {}
    for label, argv in cases.items():
        samples = _time(argv, args.runs)
        medians[label] = statistics.median(samples)
        print(f"  {label:<70} median {medians[label]:6.2f} s  (min {min(samples):.2f}, max {max(samples):.2f})")
    base, full = medians.values()
    print(f"  {'cost of our stacks over an empty app':<70}        {full - base:6.2f} s")
    _print_costs(envs)
    if not args.skip_tests:
        _print_test_time()


def _print_costs(envs: list[str]) -> None:
    from callsaver_infra.app.names import CI_STACK, EnvNames
    from callsaver_infra.ops.cloud_assembly import read_assembly
    from callsaver_infra.ops.cost_report import count_templates

    with tempfile.TemporaryDirectory() as outdir:
        env = {**os.environ, "CDK_OUTDIR": outdir, "CDK_CONTEXT_JSON": _context()}
        subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, check=True, capture_output=True)
        templates = {stack.name: stack.template() for stack in read_assembly(Path(outdir))}
    print("cost-bearing resources per environment (from the synthesized templates)")
    print(
        f"  {'environment':<12} {'NAT gw':>7} {'LBs':>5} {'iface VPCE':>11} {'tasks':>6} {'task vCPU':>10}"
        f" {'alarms':>7} {'alarm metrics':>14} {'dashboards':>11} {'S3 req metrics':>15} {'KMS keys':>9}"
    )
    groups = {
        e: [n.storage_stack, n.iam_stack, n.secrets_stack, n.agent_stack, n.monitoring_stack]
        for e in envs
        for n in [EnvNames(e)]
    }
    for name, stacks in {**groups, "ci": [CI_STACK]}.items():
        c = count_templates(templates[s] for s in stacks if s in templates)
        row = f"{c.nat_gateways:>7} {c.load_balancers:>5} {c.interface_endpoints:>11} {c.running_tasks:>6}"
        monitoring = (
            f"{c.alarms:>7} {c.alarm_metrics:>14} {c.dashboards:>11} {c.request_metrics_configurations:>15}"
            f" {c.kms_keys:>9}"
        )
        print(f"  {name:<12} {row} {c.task_vcpus:>10.2f} {monitoring}")


def _print_test_time() -> None:
    # One run of what `make test` runs; wall time includes the session's synth and the real-CLI tests.
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    print(f"test suite wall time: {elapsed:.1f} s  ({lines[-1].strip('= ') if lines else 'no output'})")


def _node_version() -> str:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "not found"


if __name__ == "__main__":
    main()
