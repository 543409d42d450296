#!/usr/bin/env python3
"""Print the median wall time of synthesizing every environment next to an empty CDK app, in one run.

Each sample is a fresh Python process (jsii starts its Node runtime every time, as `cdk synth` does).
Usage: python benchmarks/synth_bench.py [--runs N]
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
    args = parser.parse_args()
    envs = sorted(p.stem for p in (ROOT / "config").glob("*.toml"))
    cases = {
        "empty CDK app": [sys.executable, "-c", EMPTY_APP],
        f"callsaver-infra, all environments ({', '.join(envs)})": [sys.executable, "app.py"],
    }
    print(f"synth wall time, median of {args.runs} fresh processes (node {_node_version()})")
    medians = {}
    for label, argv in cases.items():
        samples = _time(argv, args.runs)
        medians[label] = statistics.median(samples)
        print(f"  {label:<66} median {medians[label]:6.2f} s  (min {min(samples):.2f}, max {max(samples):.2f})")
    base, full = medians.values()
    print(f"  {'cost of our stacks over an empty app':<60}        {full - base:6.2f} s")


def _node_version() -> str:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "not found"


if __name__ == "__main__":
    main()
