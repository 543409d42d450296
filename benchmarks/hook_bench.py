#!/usr/bin/env python3
"""Print the median wall time of `callsaver-infra push-egress` (a run that changes the rule, and one that does not).

LiveKit is the local server (callsaver_infra.dev.livekit_local) on 127.0.0.1 and AWS is moto's server on 127.0.0.1,
so this measures the hook itself: reading outputs and secrets, one ListSIPDispatchRule, and an
UpdateSIPDispatchRule when something changed. Runs are in-process (imports are paid once); --subprocess times the
console script in a fresh process each time instead, as an operator sees it.
--json adds a last line with each case's median in seconds (for benchmarks/synth_bench.py).
Usage: python benchmarks/hook_bench.py [--runs N] [--subprocess] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from livekit import api
from moto.server import ThreadedMotoServer

from callsaver_infra.dev.livekit_local import LocalLiveKitServer
from callsaver_infra.ops.cli import EXIT_OK, main

ROOT = Path(__file__).resolve().parents[1]
ENV, REGION, BUCKET = "local", "us-west-1", "callsaver-sessions-local"
API_KEY, API_SECRET = "APIfakekeyNotReal01", "test-livekit-secret-not-real-0123456789abcdef"
ACCESS_KEY_ID, SECRET_ACCESS_KEY = "AKIDFAKE0000EXAMPLE1", "FAKEsecretAccessKeyNotReal0000000000000"


def _deploy(endpoint: str, workdir: Path) -> tuple[Path, Path]:
    """Create the bucket and secrets in moto; write the outputs file and a config dir (the local environment's)."""

    def client(service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=endpoint)

    s3, secrets = client("s3"), client("secretsmanager")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    value = json.dumps({"accessKeyId": ACCESS_KEY_ID, "secretAccessKey": SECRET_ACCESS_KEY})
    arn = secrets.create_secret(Name=f"callsaver/{ENV}/egress/s3-access-key", SecretString=value)["ARN"]
    for ref, secret in (("LIVEKIT_API_KEY", API_KEY), ("LIVEKIT_API_SECRET", API_SECRET)):
        secrets.create_secret(Name=f"callsaver/{ENV}/backend/{ref}", SecretString=secret)
    outputs = workdir / f"cdk.outputs.{ENV}.json"
    outputs.write_text(
        json.dumps(
            {
                f"Callsaver-Storage-{ENV}": {"SessionBucketName": BUCKET, "SessionBucketRegion": REGION},
                f"Callsaver-IAM-{ENV}": {"EgressCredentialsSecretArn": arn, "EgressAccessKeyId": ACCESS_KEY_ID},
            }
        )
    )
    config_dir = workdir / "config"
    config_dir.mkdir()
    # The environment finds its rule by the agent it dispatches; no id in config.
    (config_dir / f"{ENV}.toml").write_text((ROOT / "config" / f"{ENV}.toml").read_text())
    return outputs, config_dir


def _sample(run: Callable[[], None], before: Callable[[], None], runs: int) -> tuple[list[float], list[float]]:
    """Wall times, and the CPU times (user + system) of the fresh processes (zero in-process)."""
    samples, cpu = [], []
    for _ in range(runs):
        before()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime)
    return samples, cpu


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="samples per case (default 10)")
    parser.add_argument("--subprocess", action="store_true", help="time a fresh `callsaver-infra` process per run")
    parser.add_argument("--json", action="store_true", help="end with one JSON line: each case's median in seconds")
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log would drown the figures
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "operator-fake-key-id",
            "AWS_SECRET_ACCESS_KEY": "operator-fake-secret",
            "AWS_DEFAULT_REGION": REGION,
        }
    )
    os.environ.pop("AWS_PROFILE", None)
    try:
        with (
            LocalLiveKitServer(API_KEY, API_SECRET, s3_endpoint_url=endpoint) as lk,
            tempfile.TemporaryDirectory() as tmp,
        ):
            original = api.SIPDispatchRuleInfo(
                name="callsaver-inbound",
                trunk_ids=["ST_benchtrunk"],
                rule=api.SIPDispatchRule(dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="call")),
                room_config=api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name="callsaver-agent-local")]),
            )
            rule_id = lk.add_dispatch_rule(original)
            seeded = lk.dispatch_rules[rule_id]
            outputs, config_dir = _deploy(endpoint, Path(tmp))
            argv = ["--config-dir", str(config_dir), "push-egress", "--env", ENV]
            argv += ["--outputs-file", str(outputs), "--livekit-url", lk.url]

            def run() -> None:
                if args.subprocess:
                    cli = Path(sys.executable).with_name("callsaver-infra")
                    subprocess.run([str(cli), *argv], check=True, capture_output=True)
                    return
                with contextlib.redirect_stdout(io.StringIO()):
                    code = main(argv)
                if code != EXIT_OK:
                    raise SystemExit(f"push-egress exited {code}")

            def reset_rule() -> None:
                with lk.lock:
                    lk.dispatch_rules[rule_id] = seeded  # without room_config.egress: the next run must push

            def nothing() -> None:
                pass

            run()  # warm-up (imports, first connections), and leaves the rule up to date
            cases = {
                "no-change run (List, SSM receipt)": (nothing, "UpdateSIPDispatchRule"),
                # A rule with no recording yet: the listing shows no credentials, so the masking probe runs too.
                "first push (probe, replace, read back)": (reset_rule, None),
            }
            where = "fresh process per run" if args.subprocess else "in-process"
            medians = {}
            print(f"push-egress wall time, median of {args.runs} runs ({where}; local LiveKit server + moto)")
            for label, (before, forbidden) in cases.items():
                calls = len(lk.requests)
                samples, cpu = _sample(run, before, args.runs)
                if forbidden is not None:
                    assert forbidden not in lk.methods_called()[calls:], f"{label}: unexpected {forbidden}"
                median = medians[label] = statistics.median(samples)
                print(
                    f"  {label:<40} median {median * 1000:7.1f} ms  "
                    f"(min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})"
                    + (f"; process CPU median {statistics.median(cpu) * 1000:.1f} ms" if args.subprocess else "")
                )
            if args.json:
                print(json.dumps(medians))  # wall medians in seconds
    finally:
        moto.stop()


if __name__ == "__main__":
    main_bench()
