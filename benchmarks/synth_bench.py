#!/usr/bin/env python3
"""Print, in one run, the speed figures of issue 13 beside their targets, and the cost-bearing resources.

- synth: CPU time (user + system of the process and its Node child) of synthesizing every environment, the CI and
  the registry stack with the cdk-nag gate (app.py, as `cdk synth` runs it), divided by an empty CDK app's; the two
  run alternately (paired), so load from other work weighs on both, and the figure is the median of the pairs'
  ratios. Each sample is a fresh Python process (jsii starts its Node runtime every time, as `cdk synth` does).
  Two lines: with the CloudFormation validation memo warm (every template validated by an earlier synth: the
  inner loop's re-synth for cdk diff, make deploy, tests) and cold (CALLSAVER_CFN_VALIDATE_MEMO=off: the built-in
  validates every template afresh, as on a first synth or after a CDK upgrade). --one-miss adds a third: one
  template's entry removed before each run (one stack changed).
- the test suite's wall time (what `make test` runs), `make rehearse`'s wall time
  (`python -m callsaver_infra.dev.rehearsal`),
- push-egress as a process (the `callsaver-infra` console script, fresh process per run) against the local LiveKit
  server and moto: benchmarks/hook_bench.py --subprocess, median of several runs.
Each figure is one entry of FIGURES: (label, target, unit, function); add a line there for one more.
Usage: python benchmarks/synth_bench.py [--runs N] [--skip-tests] [--skip-rehearse] [--skip-hook] [--one-miss]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

EMPTY_APP = "import aws_cdk; aws_cdk.App().synth()"


def _context() -> str:
    # What the CDK CLI hands app.py: cdk.json's context plus its own defaults.
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    return json.dumps({"aws:cdk:enable-path-metadata": True, "aws:cdk:enable-asset-metadata": True, **context})


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float  # user + system of the process and every child it waited for (jsii's Node process)


def _run(argv: list[str], env: dict[str, str] | None = None, check: bool = True) -> tuple[Sample, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall, cpu), result.stdout


def _synth(argv: list[str], env: dict[str, str] | None = None) -> Sample:
    with tempfile.TemporaryDirectory() as outdir:
        return _run(argv, {**os.environ, "CDK_OUTDIR": outdir, "CDK_CONTEXT_JSON": _context(), **(env or {})})[0]


def _synth_ratio(runs: int, memo: str) -> tuple[float, str]:
    """Median over `runs` pairs of (all environments' synth CPU) / (empty app's synth CPU), app.py's validation memo
    warm, cold (off) or missing one template; the empty app is always the same (aws-cdk-lib's built-in on)."""
    empty_argv, full_argv = [sys.executable, "-c", EMPTY_APP], [sys.executable, "app.py"]
    _synth(empty_argv)  # warm the file cache (aws-cdk-lib's jsii bundle), outside the figures
    with tempfile.TemporaryDirectory() as memo_dir:
        full_env = {"CALLSAVER_CFN_VALIDATE_MEMO": "off" if memo == "cold" else "on"}
        full_env["CALLSAVER_CFN_VALIDATE_MEMO_DIR"] = memo_dir  # the bench's own: the repo's memo is left alone
        if memo != "cold":
            _synth(full_argv, full_env)  # fill the memo, outside the figures
        entries = sorted(Path(memo_dir).glob("*/*.json"))

        def full() -> Sample:
            if memo == "one-miss":
                saved = entries[0].read_bytes()
                entries[0].unlink()
                sample = _synth(full_argv, full_env)
                entries[0].write_bytes(saved)  # the same entry every run: one template validated each time
                return sample
            return _synth(full_argv, full_env)

        pairs = []
        for i in range(runs):
            # Alternate which goes first, so a load change within a pair does not always favour one side.
            if i % 2 == 0:
                e, f = _synth(empty_argv), full()
            else:
                f, e = full(), _synth(empty_argv)
            pairs.append((e, f))
    ratios = [f.cpu / e.cpu for e, f in pairs]
    e_cpu, f_cpu = (statistics.median(p[k].cpu for p in pairs) for k in (0, 1))
    e_wall, f_wall = (statistics.median(p[k].wall for p in pairs) for k in (0, 1))
    detail = (
        f"CPU median {f_cpu:.2f} s vs empty app {e_cpu:.2f} s (wall {f_wall:.2f} vs {e_wall:.2f} s); "
        f"pair ratios {min(ratios):.2f}-{max(ratios):.2f}, {runs} pairs, node {_node_version()}"
    )
    return statistics.median(ratios), detail


def synth_ratio_warm(runs: int) -> tuple[float, str]:
    """Every template unchanged since the memo's last synth: no template is validated again."""
    return _synth_ratio(runs, "warm")


def synth_ratio_cold(runs: int) -> tuple[float, str]:
    """The memo off: aws-cdk-lib's built-in validates every template, as on a first synth."""
    return _synth_ratio(runs, "cold")


def synth_ratio_one_miss(runs: int) -> tuple[float, str]:
    """One template changed since the last synth: the validator starts, for that template only."""
    return _synth_ratio(runs, "one-miss")


def suite_wall(_runs: int) -> tuple[float, str]:
    """One run of what `make test` runs; a failing suite stops the bench (its time would mean nothing)."""
    sample, out = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"])
    lines = [line for line in out.splitlines() if line.strip()]
    return sample.wall, lines[-1].strip("= ") if lines else "no output"


def rehearse_wall(_runs: int) -> tuple[float, str]:
    """One run of what `make rehearse` runs (the venv and node_modules exist: make's setup is a no-op); a failed
    rehearsal stops the bench."""
    env = {**os.environ, "PATH": f"{ROOT / 'node_modules' / '.bin'}:{BIN}:{os.environ['PATH']}"}
    sample, out = _run([sys.executable, "-m", "callsaver_infra.dev.rehearsal"], env)
    lines = [line for line in out.splitlines() if line.strip()]
    return sample.wall, lines[-1] if lines else "no output"


def push_egress_wall(runs: int) -> tuple[float, str]:
    """hook_bench.py --subprocess: a fresh `callsaver-infra push-egress` per run; the slower case's median."""
    runs = max(runs, 5)
    _, out = _run([sys.executable, "benchmarks/hook_bench.py", "--subprocess", "--runs", str(runs), "--json"])
    medians: dict[str, float] = json.loads(out.splitlines()[-1])
    detail = "; ".join(f"{label} {m:.2f} s" for label, m in medians.items())
    return max(medians.values()), f"median of {runs} fresh processes: {detail}"


@dataclass(frozen=True)
class Figure:
    label: str
    target: float
    unit: str  # "x" (a ratio) or "s"
    measure: Callable[[int], tuple[float, str]]
    skip_flag: str | None = None
    only_with: str | None = None  # an opt-in figure: measured only with this flag


FIGURES = (
    Figure("synth, all environments / empty CDK app (CPU, paired), memo WARM", 1.6, "x", synth_ratio_warm),
    Figure("synth, all environments / empty CDK app (CPU, paired), memo COLD (off)", 1.6, "x", synth_ratio_cold),
    Figure(
        "synth, all environments / empty CDK app (CPU, paired), ONE template changed",
        1.6,
        "x",
        synth_ratio_one_miss,
        only_with="one_miss",
    ),
    Figure("test suite (make test), wall", 60.0, "s", suite_wall, "skip_tests"),
    Figure("make rehearse, wall", 10.0, "s", rehearse_wall, "skip_rehearse"),
    Figure("push-egress as a process, wall", 1.0, "s", push_egress_wall, "skip_hook"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="synth pairs and push-egress runs (default 5)")
    parser.add_argument("--skip-tests", action="store_true", help="do not time the test suite")
    parser.add_argument("--skip-rehearse", action="store_true", help="do not time the rehearsal")
    parser.add_argument("--skip-hook", action="store_true", help="do not time push-egress")
    parser.add_argument("--one-miss", action="store_true", help="also time synth with one template changed")
    parser.add_argument("--skip-costs", action="store_true", help="do not print the cost-bearing resources")
    args = parser.parse_args()
    print(f"speed figures (issue 13 targets), {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for figure in FIGURES:
        if figure.skip_flag and getattr(args, figure.skip_flag):
            continue
        if figure.only_with and not getattr(args, figure.only_with):
            continue
        value, detail = figure.measure(args.runs)
        verdict = "ok" if value <= figure.target else "OVER"
        shown = f"{value:.2f}x" if figure.unit == "x" else f"{value:.2f} s"
        target = f"<= {figure.target:g}x" if figure.unit == "x" else f"<= {figure.target:g} s"
        rows.append(f"  {figure.label:<76} {shown:>9}  target {target:<8} {verdict:<4}  {detail}")
        print(rows[-1], flush=True)
    if not args.skip_costs:
        _print_costs(sorted(p.stem for p in (ROOT / "config").glob("*.toml")))


def _print_costs(envs: list[str]) -> None:
    from callsaver_infra.app.names import CI_STACK, EnvNames
    from callsaver_infra.ops.cloud_assembly import read_assembly
    from callsaver_infra.ops.cost_report import count_templates

    with tempfile.TemporaryDirectory() as outdir:
        env = {**os.environ, "CDK_OUTDIR": outdir, "CDK_CONTEXT_JSON": _context()}
        subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, check=True, capture_output=True)
        # Without -c env each environment (and CI, registry) is a Stage: its stacks are in its nested assembly.
        stacks = [stack for sub in sorted(Path(outdir).glob("assembly-*")) for stack in read_assembly(sub)]
        templates = {stack.name: stack.template() for stack in stacks}
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


def _node_version() -> str:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "not found"


if __name__ == "__main__":
    main()
