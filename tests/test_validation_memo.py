"""The memo of aws-cdk-lib's built-in CloudFormation validation (callsaver_infra/app/validation_memo.py): the same
report as the built-in, cold and warm, without the validator's engine when nothing changed. The findings come from
the real validator (@aws/cloudformation-validate, bundled with aws-cdk-lib) on real synthesized templates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsii
import pytest
from aws_cdk import (
    Acknowledgment,
    App,
    CfnResource,
    Environment,
    IPolicyValidationContext,
    IPolicyValidationPlugin,
    PolicyValidationPluginReport,
    PolicyViolatingResource,
    PolicyViolation,
    Stack,
    Stage,
    Validations,
)

from callsaver_infra.app import validation_memo
from callsaver_infra.app.validation_memo import MemoizedCloudFormationValidate, enable_memoized_validation
from tests.helpers import CliSynth, app_py, memo_entries, synth_outputs

CFN_VALIDATE = "CloudFormation Validate"


@jsii.implements(IPolicyValidationPlugin)
class _OtherPlugin:
    """Another plugin on the app (as cdk-nag's are), so the test sees where the built-in's report sits among them."""

    @property
    def name(self) -> str:
        return "Other"

    @property
    def version(self) -> str:
        return "1"

    @property
    def rule_ids(self) -> list[str] | None:
        return None

    def validate(self, context: IPolicyValidationContext) -> PolicyValidationPluginReport:
        first = context.stack_templates[0]
        resource = PolicyViolatingResource(resource_logical_id="Q", template_path=first.template_path, locations=[])
        violation = PolicyViolation(
            rule_name="O1", description="other", severity="warning", violating_resources=[resource]
        )
        return PolicyValidationPluginReport(success=True, violations=[violation])


def _stack(scope: Stage | App, name: str, bucket_name: str) -> Stack:
    # Values the validator reports (checked against the built-in below): past SQS's maximum, an unknown property,
    # a bucket name against S3's pattern.
    stack = Stack(scope, name, env=Environment(account="111111111111", region="eu-west-1"))
    CfnResource(stack, "Q", type="AWS::SQS::Queue", properties={"VisibilityTimeout": 999999, "Bogus": 1})
    CfnResource(stack, "B", type="AWS::S3::Bucket", properties={"BucketName": bucket_name})
    return stack


def _synth(
    outdir: Path, memo_dir: Path | None, *, stages: bool = True, bucket: str = "UPPER", ack: bool = False
) -> tuple[str, MemoizedCloudFormationValidate | None]:
    """A tiny app (a top-level stack and, with stages, two Stages' stacks holding the same findings, so findings merge
    across templates); memo_dir None runs the built-in itself. Returns the validation report and the memo plugin."""
    app = App(outdir=str(outdir), analytics_reporting=False, builtin_cloud_formation_validation=memo_dir is None)
    top = _stack(app, "Top", bucket)
    if stages:
        _stack(Stage(app, "st1"), "A", "UPPER")
        _stack(Stage(app, "st2"), "B", "other!")
    if ack:
        Validations.of(top).acknowledge(Acknowledgment(id="CloudFormation-Validate::F3034", reason="a test fixture"))

    def add_other(app: App) -> None:
        Validations.of(app).add_plugins(_OtherPlugin())

    plugin = enable_memoized_validation(app, memo_dir, add_other) if memo_dir is not None else None
    if memo_dir is None:
        add_other(app)
    app.synth()
    report = (outdir / "validation-report.json").read_text()
    return re.sub(r"jsii-kernel-\w+", "jsii-kernel-*", report), plugin


def _cfn_report(report: str) -> dict[str, Any]:
    (found,) = [r for r in json.loads(report)["pluginReports"] if r["pluginName"] == CFN_VALIDATE]
    return dict(found)


def _forbid_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, building or using the real plugin (the validator's engine) fails the test."""

    def no_engine() -> None:
        raise AssertionError("a warm synth used the validator")

    monkeypatch.setattr(validation_memo, "_REAL", [])
    monkeypatch.setattr(validation_memo, "CloudFormationValidatePlugin", no_engine)
    monkeypatch.setattr(validation_memo, "_real_plugin", no_engine)


def _entries(memo_dir: Path) -> list[Path]:
    return sorted(memo_dir.glob("*/*.json"))


@pytest.mark.parametrize("stages", [True, False], ids=["stages", "top-level"])
def test_a_finding_is_reported_as_the_builtin_reports_it_cold_and_warm_and_warm_starts_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stages: bool
) -> None:
    builtin, _ = _synth(tmp_path / "builtin", None, stages=stages)
    found = _cfn_report(builtin)
    assert {v["ruleName"] for v in found["violations"]} == {"F3002", "F3031", "F3034"}  # the validator's own
    memo = tmp_path / "memo"
    cold, plugin = _synth(tmp_path / "cold", memo, stages=stages)
    assert plugin is not None and plugin.hits == 0
    assert cold == builtin
    assert len(_entries(memo)) == plugin.misses == (3 if stages else 1)

    _forbid_the_engine(monkeypatch)
    warm, plugin = _synth(tmp_path / "warm", memo, stages=stages)
    assert plugin is not None and plugin.misses == 0
    assert warm == builtin
    # The report names each finding's template inside this synth's outdir, not the one the entry was written from.
    assert all("<template>" in p.read_text() and str(tmp_path) not in p.read_text() for p in _entries(memo))


def test_one_changed_byte_of_a_template_is_a_miss_and_only_that_template_is_validated(tmp_path: Path) -> None:
    memo = tmp_path / "memo"
    _synth(tmp_path / "cold", memo)
    changed, plugin = _synth(tmp_path / "changed", memo, bucket="UPPEr")  # one byte of Top's template
    assert plugin is not None and (plugin.misses, plugin.hits) == (1, 2)
    builtin, _ = _synth(tmp_path / "builtin", None, bucket="UPPEr")
    assert changed == builtin
    assert "'UPPEr' does not match" in changed


def test_the_key_covers_the_template_bytes_and_the_stack_it_belongs_to(tmp_path: Path) -> None:
    template = tmp_path / "T.template.json"
    template.write_bytes(b'{"Resources": {}}')
    plugin = MemoizedCloudFormationValidate(tmp_path / "memo")
    stack = validation_memo._Stack("st1/A", str(template), "111111111111", "eu-west-1")
    key = plugin.key(stack)
    moved = tmp_path / "elsewhere" / "T.template.json"  # another outdir: the same key
    moved.parent.mkdir()
    moved.write_bytes(template.read_bytes())
    assert plugin.key(validation_memo._Stack("st1/A", str(moved), "111111111111", "eu-west-1")) == key
    template.write_bytes(b'{"Resources": {} }')
    assert plugin.key(stack) != key
    template.write_bytes(b'{"Resources": {}}')
    for other in (
        validation_memo._Stack("st1/B", str(template), "111111111111", "eu-west-1"),
        validation_memo._Stack("st1/A", str(template), "222222222222", "eu-west-1"),
        validation_memo._Stack("st1/A", str(template), "111111111111", "us-east-1"),
        validation_memo._Stack("st1/A", str(template), None, None),
    ):
        assert plugin.key(other) != key


def _truncate(p: Path) -> None:
    p.write_text(p.read_text()[:-20])


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x00\xff not json")


def _altered_finding(p: Path) -> None:
    # Valid JSON of the right shape, one finding's text changed: the checksum tells.
    p.write_text(p.read_text().replace("VisibilityTimeout: 999999", "VisibilityTimeout: 999998"))


def _emptied(p: Path) -> None:
    # A "pass" written over the findings: no violations, the rest kept.
    entry = json.loads(p.read_text())
    p.write_text(json.dumps({**entry, "violations": []}))


def _unreadable(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _moved(p: Path) -> None:
    # Another template's entry under this template's name.
    others = sorted(q for q in p.parent.parent.glob("*/*.json") if q != p)
    p.write_text(others[0].read_text())


@pytest.mark.parametrize("corrupt", [_truncate, _garbage, _altered_finding, _emptied, _unreadable, _moved])
def test_a_corrupt_entry_is_a_miss_never_an_error_or_a_pass(tmp_path: Path, corrupt: Any) -> None:
    memo = tmp_path / "memo"
    builtin, _ = _synth(tmp_path / "builtin", None)
    _synth(tmp_path / "cold", memo)
    entries = _entries(memo)
    for entry in entries if corrupt is not _moved else entries[:1]:
        corrupt(entry)
    again, plugin = _synth(tmp_path / "again", memo)
    assert plugin is not None and plugin.misses == (1 if corrupt is _moved else 3)
    assert again == builtin
    if corrupt is not _unreadable:  # rewritten whole
        assert all(MemoizedCloudFormationValidate(memo)._load(e.stem) for e in entries)


def test_acknowledgements_of_cloudformation_validate_findings_still_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builtin, _ = _synth(tmp_path / "builtin", None, ack=True)
    suppressed = _cfn_report(builtin)["suppressedViolations"]
    assert [(s["ruleName"], s["acknowledgedId"]) for s in suppressed] == [("F3034", "CloudFormation-Validate::F3034")]
    memo = tmp_path / "memo"
    cold, _ = _synth(tmp_path / "cold", memo, ack=True)
    _forbid_the_engine(monkeypatch)
    warm, plugin = _synth(tmp_path / "warm", memo, ack=True)
    assert plugin is not None and plugin.misses == 0
    assert cold == warm == builtin


def _app_py(outdir: Path, **env: str) -> dict[str, str]:
    """app.py (every environment) in a fresh process; its templates and validation report, by relative path."""
    result = app_py(outdir, **env)
    assert result.returncode == 0, result.stderr
    return synth_outputs(outdir)


def test_app_py_writes_the_same_templates_and_report_with_the_memo_cold_warm_and_off(
    tmp_path: Path, app_py_all: CliSynth, cli_synth_all: CliSynth
) -> None:
    """Cold: app.py with an empty memo (app_py_all). Warm: `cdk synth` of the same app on the memo the cold run
    filled (cli_synth_all, after it): every template a hit, no entry added. Off: the built-in itself."""
    assert app_py_all.result.returncode == 0, app_py_all.result.stderr
    assert cli_synth_all.result.returncode == 0, cli_synth_all.result.stderr
    memo = app_py_all.memo
    assert memo is not None and cli_synth_all.memo == memo
    cold = synth_outputs(app_py_all.outdir)
    templates = [name for name in cold if name.endswith(".template.json")]
    assert len(templates) >= 16 and "validation-report.json" in cold
    assert len(app_py_all.memo_after) == len(templates)  # one entry per template
    assert cli_synth_all.memo_after == app_py_all.memo_after  # warm: nothing was validated again
    warm = synth_outputs(cli_synth_all.outdir)
    off = _app_py(tmp_path / "off", CALLSAVER_CFN_VALIDATE_MEMO="off", CALLSAVER_CFN_VALIDATE_MEMO_DIR=str(memo))
    assert cold == warm == off
    assert memo_entries(memo) == list(app_py_all.memo_after)  # off neither read nor wrote it
    # --no-validation: the memo is not consulted either (and aws-cdk-lib runs no built-in).
    unvalidated = tmp_path / "unvalidated-memo"
    none = _app_py(tmp_path / "none", CDK_VALIDATION="false", CALLSAVER_CFN_VALIDATE_MEMO_DIR=str(unvalidated))
    assert not unvalidated.exists()
    assert {k: v for k, v in none.items() if k in templates} == {k: cold[k] for k in templates}


def test_app_py_refuses_an_unknown_memo_switch(tmp_path: Path) -> None:
    result = app_py(tmp_path, CALLSAVER_CFN_VALIDATE_MEMO="false")
    assert result.returncode == 2
    assert "CALLSAVER_CFN_VALIDATE_MEMO='false'" in result.stderr and "'off'" in result.stderr
