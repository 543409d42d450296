"""The context the CDK CLI hands app.py, for `python app.py` and in-process synths without the CLI. Light on purpose
(no construct library): app.py reads it before its config checks, so a refusal answers before the stacks load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cli_context(project_dir: Path) -> dict[str, Any]:
    """The context the CDK CLI hands app.py from project_dir: cdk.json's context (the feature flags) and
    cdk.context.json, plus the CLI's own defaults, so `python app.py` synthesizes what `cdk synth` does."""
    cdk_json = json.loads((project_dir / "cdk.json").read_text(encoding="utf-8"))
    saved = project_dir / "cdk.context.json"
    context: dict[str, Any] = {
        **cdk_json.get("context", {}),
        **(json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}),
        # What the CLI adds unless told otherwise (aws-cdk's exec: pathMetadata, assetMetadata, versionReporting).
        "aws:cdk:enable-path-metadata": cdk_json.get("pathMetadata", True),
        "aws:cdk:enable-asset-metadata": cdk_json.get("assetMetadata", True),
    }
    if cdk_json.get("versionReporting") is False:
        context["aws:cdk:disable-version-reporting"] = True
    return context
