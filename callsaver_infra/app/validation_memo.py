"""A content-addressed memo of aws-cdk-lib's built-in CloudFormation validation: the same findings, without starting
the validator's WebAssembly engine (2-3 s of CPU per process) when no template changed.

The built-in plugin (aws-cdk-lib 2.275 core/lib/validation/cloudformation-validate-plugin.js) validates each stack
template on its own: its findings depend only on the validator (pinned by aws-cdk-lib: @aws/cloudformation-validate
1.12.1 and the rules it ships), the template's bytes, and the stack's construct path, account and region. Those are
the key. The merging of findings across templates is redone here exactly as the built-in does it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import (
    App,
    CloudFormationValidatePlugin,
    IPolicyValidationContext,
    IPolicyValidationPlugin,
    PolicyValidationPluginReport,
    PolicyValidationStack,
    PolicyViolatingResource,
    PolicyViolation,
    Stage,
    Validations,
)
from constructs import IConstruct

# Bump when the stored format or the key's parts change: older entries then simply miss.
MEMO_FORMAT = 1
# Where app.py keeps the memo, relative to the project directory (gitignored); the tests and the lifecycle
# rehearsal share it.
PROJECT_MEMO_DIR = Path(".cache") / "cfn-validate"
# Stands for the template's own path in stored findings: the path changes with the outdir, the findings do not.
TEMPLATE_MARKER = "<template>"
# The built-in's name (CloudFormationValidatePlugin.PLUGIN_NAME): the warning downgrade, the acknowledgement
# namespace (CloudFormation-Validate::...) and the report are keyed by it (core/lib/private/synthesis-validation.js).
PLUGIN_NAME = "CloudFormation Validate"


_REAL: list[CloudFormationValidatePlugin] = []


def _real_plugin() -> CloudFormationValidatePlugin:
    """The real plugin, built (its engine started) on the first miss, once per process."""
    if not _REAL:
        _REAL.append(CloudFormationValidatePlugin())
    return _REAL[0]


@dataclass(frozen=True)
class _Stack:
    construct_path: str
    template_path: str
    account: str | None
    region: str | None


@jsii.implements(IPolicyValidationContext)
class _Context:
    """The context handed to the real plugin for the templates that missed (it reads only stackTemplates)."""

    def __init__(self, app: IConstruct, stacks: list[_Stack]) -> None:
        self._app = app
        self._stacks = stacks

    @property
    def app_construct(self) -> IConstruct:
        return self._app

    @property
    def stack_templates(self) -> list[PolicyValidationStack]:
        return [
            PolicyValidationStack(
                stack_construct_path=s.construct_path,
                template_path=s.template_path,
                account_id=s.account,
                region=s.region,
            )
            for s in self._stacks
        ]

    @property
    def template_paths(self) -> list[str]:
        return [s.template_path for s in self._stacks]

    @property
    def account_id(self) -> str | None:
        return None

    @property
    def region(self) -> str | None:
        return None


@jsii.implements(IPolicyValidationPlugin)
class MemoizedCloudFormationValidate:
    """Register with `App(builtin_cloud_formation_validation=False)` + `Validations.of(app).add_plugins(...)`: the
    built-in CloudFormation validation, its results read from memo_dir when a template was validated before."""

    def __init__(self, memo_dir: Path) -> None:
        self.memo_dir = memo_dir
        self.hits = 0
        self.misses = 0  # each one validated by the real plugin
        self._version: str | None = None
        self._cdk_lib = distribution_version("aws-cdk-lib")

    @property
    def name(self) -> str:
        return PLUGIN_NAME

    @property
    def version(self) -> str | None:
        # Read by the CDK after validate() (invokeSinglePlugin): the validator's version, stored with every entry.
        return self._version

    @property
    def rule_ids(self) -> list[str] | None:
        return None  # only the beta1 adapter reads it; answering would start the engine

    def validate(self, context: IPolicyValidationContext) -> PolicyValidationPluginReport:
        """Validate every stack template of context: from the memo where possible, else with the real plugin."""
        stacks = _builtin_order(
            context.app_construct,
            [_Stack(s.stack_construct_path, s.template_path, s.account_id, s.region) for s in context.stack_templates],
        )
        per_template: list[list[dict[str, Any]]] = []
        for stack in stacks:
            key = self.key(stack)
            found = self._load(key)
            if found is None:
                self.misses += 1
                found = self._validate_one(context.app_construct, stack)
                self._store(key, found)
            else:
                self.hits += 1
            self._version = found["pluginVersion"]
            per_template.append(_restore(found["violations"], stack.template_path))
        violations = _merge(per_template)
        return PolicyValidationPluginReport(
            success=all(v["severity"] not in ("error", "fatal") for v in violations),
            violations=[_to_violation(v) for v in violations],
        )

    def key(self, stack: _Stack) -> str:
        """sha256 of everything the built-in's findings for one template depend on."""
        digest = hashlib.sha256()
        header = json.dumps(
            [MEMO_FORMAT, self._cdk_lib, stack.construct_path, stack.account, stack.region], separators=(",", ":")
        )
        digest.update(header.encode() + b"\0")
        digest.update(Path(stack.template_path).read_bytes())
        return digest.hexdigest()

    def _validate_one(self, app: IConstruct, stack: _Stack) -> dict[str, Any]:
        real = _real_plugin()
        report = real.validate(_Context(app, [stack]))
        violations = [_from_violation(v, stack.template_path) for v in report.violations]
        return {"pluginVersion": real.version, "violations": violations}

    def _path(self, key: str) -> Path:
        return self.memo_dir / key[:2] / f"{key}.json"

    def _load(self, key: str) -> dict[str, Any] | None:
        """The stored entry, or None (a miss) when it is absent, unreadable, altered or not what _store writes."""
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or set(entry) != {"format", "key", "sha256", "pluginVersion", "violations"}:
            return None
        found = {"pluginVersion": entry["pluginVersion"], "violations": entry["violations"]}
        if entry["format"] != MEMO_FORMAT or entry["key"] != key or entry["sha256"] != _checksum(found):
            return None
        return found if _valid(found) else None

    def _store(self, key: str, found: dict[str, Any]) -> None:
        """Write atomically (a temporary file, then os.replace): concurrent synths read a whole entry or none."""
        if not _storable(found):
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"format": MEMO_FORMAT, "key": key, "sha256": _checksum(found), **found}, f)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass  # a memo that cannot be written only costs the next synth a cold validation


def _from_violation(v: PolicyViolation, template_path: str) -> dict[str, Any]:
    return {
        "ruleName": v.rule_name,
        "description": v.description,
        "severity": v.severity,
        "fix": v.fix,
        "ruleMetadata": dict(v.rule_metadata) if v.rule_metadata is not None else None,
        "violatingResources": [
            {
                "resourceLogicalId": r.resource_logical_id,
                "constructPath": r.construct_path,
                "templatePath": TEMPLATE_MARKER if r.template_path == template_path else r.template_path,
                "locations": list(r.locations),
            }
            for r in v.violating_resources
        ],
    }


def _to_violation(v: dict[str, Any]) -> PolicyViolation:
    return PolicyViolation(
        rule_name=v["ruleName"],
        description=v["description"],
        severity=v["severity"],
        fix=v["fix"],
        rule_metadata=v["ruleMetadata"],
        violating_resources=[
            PolicyViolatingResource(
                resource_logical_id=r["resourceLogicalId"],
                construct_path=r["constructPath"],
                template_path=r["templatePath"],
                locations=r["locations"],
            )
            for r in v["violatingResources"]
        ],
    )


def _restore(violations: list[dict[str, Any]], template_path: str) -> list[dict[str, Any]]:
    return [
        {
            **v,
            "violatingResources": [
                {**r, "templatePath": template_path if r["templatePath"] == TEMPLATE_MARKER else r["templatePath"]}
                for r in v["violatingResources"]
            ],
        }
        for v in violations
    ]


def _merge(per_template: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The built-in's merge over templates in order: one violation per (rule, severity, description), its
    resources in order, fix and metadata from the first (cloudformation-validate-plugin.js, validate())."""
    merged: list[dict[str, Any]] = []
    by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    for violations in per_template:
        for v in violations:
            k = (v["ruleName"], v["severity"], v["description"])
            if k in by_key:
                by_key[k]["violatingResources"].extend(v["violatingResources"])
            else:
                by_key[k] = {**v, "violatingResources": list(v["violatingResources"])}
                merged.append(by_key[k])
    return merged


def _storable(found: dict[str, Any]) -> bool:
    """Only findings that do not name where the template was written (an outdir would be stale next time)."""
    for v in found["violations"]:
        for r in v["violatingResources"]:
            if r["templatePath"] not in (TEMPLATE_MARKER, None):
                return False
    return isinstance(found.get("pluginVersion"), str)


def _opt_str(x: object) -> bool:
    return x is None or isinstance(x, str)


def _checksum(found: dict[str, Any]) -> str:
    """Catches an entry altered on disk (a flipped byte in a finding would otherwise be read as a finding)."""
    return hashlib.sha256(json.dumps(found, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _valid(found: dict[str, Any]) -> bool:
    """Exactly the shape _validate_one produces, so a hit can be handed to the CDK as the built-in's report."""
    if not isinstance(found["pluginVersion"], str) or not isinstance(found["violations"], list):
        return False
    violation_fields = {"ruleName", "description", "severity", "fix", "ruleMetadata", "violatingResources"}
    resource_fields = {"resourceLogicalId", "constructPath", "templatePath", "locations"}
    for v in found["violations"]:
        if not isinstance(v, dict) or set(v) != violation_fields:
            return False
        meta, resources = v["ruleMetadata"], v["violatingResources"]
        if not (isinstance(v["ruleName"], str) and isinstance(v["description"], str)):
            return False
        if not (_opt_str(v["severity"]) and _opt_str(v["fix"])):
            return False
        if not (meta is None or (isinstance(meta, dict) and all(isinstance(x, str) for x in meta.values()))):
            return False
        if not isinstance(resources, list) or not resources:
            return False
        for r in resources:
            if not isinstance(r, dict) or set(r) != resource_fields:
                return False
            if not all(_opt_str(r[f]) for f in ("resourceLogicalId", "constructPath", "templatePath")):
                return False
            if not isinstance(r["locations"], list) or not all(isinstance(x, str) for x in r["locations"]):
                return False
    return True


def enable_memoized_validation(
    app: App, memo_dir: Path, add_other_plugins: Callable[[App], None] = lambda app: None
) -> MemoizedCloudFormationValidate:
    """Run the built-in CloudFormation validation through the memo in memo_dir (the app is built with
    `builtin_cloud_formation_validation=False` and holds its Stages already); add_other_plugins(app) registers the
    app's other validation plugins.

    The memo's report goes where aws-cdk-lib puts the built-in's (synthesis-validation.js pluginsToEvaluate, with
    plugins registered on the app only): the built-in joins every Stage's plugins, visited children first, so it
    comes before the app's plugins when the app has a Stage, after them when it has none."""
    plugin = MemoizedCloudFormationValidate(memo_dir)
    staged = any(Stage.is_stage(child) for child in app.node.children)
    if staged:
        Validations.of(app).add_plugins(plugin)
    add_other_plugins(app)
    if not staged:
        Validations.of(app).add_plugins(plugin)
    return plugin


def _stages_post_order(scope: IConstruct) -> list[str]:
    """The paths of the Stages at and below scope, children first (synthesis-validation.js visitAssemblies)."""
    paths: list[str] = []
    for child in scope.node.children:
        if Stage.is_stage(child):
            paths.extend(_stages_post_order(child))
    paths.append(scope.node.path)
    return paths


def _builtin_order(app: IConstruct, stacks: list[_Stack]) -> list[_Stack]:
    """stacks (the app's stacksRecursively: its own first) in the order the built-in sees them: it is registered on
    every Stage, visited children first, and collects each Stage's stacks into one insertion-ordered set."""
    stages = _stages_post_order(app)

    def owner(stack: _Stack) -> str:
        # The innermost Stage whose path prefixes the stack's (the app's path is "").
        return max((p for p in stages if p == "" or stack.construct_path.startswith(p + "/")), key=len)

    rank = {path: i for i, path in enumerate(stages)}
    return sorted(stacks, key=lambda s: rank[owner(s)])  # stable: a Stage's own stacks keep their order
