#!/usr/bin/env python3
"""Print the estimated monthly cost of each environment (from its synthesized templates and the pinned, dated price
table in callsaver_infra/ops/cost_report.py) beside the same environment in the common layout with a NAT gateway and an
application load balancer, then the prices and usage assumptions the figures rest on.

Usage: python benchmarks/cost_bench.py [--details]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callsaver_infra.app.names import REGISTRY_STACK, EnvNames  # noqa: E402
from callsaver_infra.ops.cloud_assembly import read_assembly  # noqa: E402
from callsaver_infra.ops.cost_report import (  # noqa: E402
    ASSUMED,
    PRICES,
    PRICES_AS_OF,
    PRICES_CHECKED,
    REGION,
    common_layout,
    count_templates,
    monthly_cost,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="also print each environment's line items")
    args = parser.parse_args()
    envs = sorted(p.stem for p in (ROOT / "config").glob("*.toml"))
    with tempfile.TemporaryDirectory() as outdir:
        # app.py takes cdk.json's context itself: the same templates as `cdk synth`.
        env = {**os.environ, "CDK_OUTDIR": outdir}
        subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, check=True, capture_output=True)
        # Without -c env each environment's stacks sit in its Stage's nested assembly (assembly-<env>/).
        stacks = [s for d in sorted(Path(outdir).glob("assembly-*")) for s in read_assembly(d)]
        templates = {stack.name: stack.template() for stack in stacks}
    groups = {e: EnvNames(e).stacks for e in envs}
    groups["registry"] = (REGISTRY_STACK,)
    checked = "" if PRICES_CHECKED else ", not yet checked against AWS's pages"
    print(
        f"estimated monthly cost, USD ({REGION} list prices recorded {PRICES_AS_OF}{checked}; "
        "usage assumed as listed below)"
    )
    print(f"  {'environment':<12} {'this app':>10} {'with NAT gateway + ALB':>24} {'difference':>11}")
    for name, stacks in groups.items():
        counts = count_templates(templates[s] for s in stacks if s in templates)
        ours, common = monthly_cost(counts), monthly_cost(common_layout(counts) if name != "registry" else counts)
        total, common_total = sum(ours.values()), sum(common.values())
        print(f"  {name:<12} {total:>10.2f} {common_total:>24.2f} {common_total - total:>+11.2f}")
        if args.details:
            _print_items(ours, common)
    _print_basis()


def _print_items(ours: dict[str, float], common: dict[str, float]) -> None:
    for label in dict.fromkeys([*ours, *common]):
        print(f"      {label:<30} {ours.get(label, 0.0):>8.2f} {common.get(label, 0.0):>24.2f}")


def _print_basis() -> None:
    print("  prices (USD):")
    for key, price in PRICES.items():
        print(f"    {key:<28} {price.usd:>9.5f} per {price.unit:<20} {price.source}")
    print("  assumed usage: " + ", ".join(f"{k}={v:g}" for k, v in ASSUMED.items()))


if __name__ == "__main__":
    main()
