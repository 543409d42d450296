"""The destructive-change gate on stateful resources, and the pull-request comment it feeds.

The gate's verdicts are checked against the real, pinned CDK CLI's own `cdk diff --fail-on destructive` (offline,
with --template), and reading deployed templates through the bootstrap roles against moto.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER
from moto import mock_aws

from callsaver_infra.names import EnvNames
from callsaver_infra.pr_comment import MAX_DIFF_CHARS, build_comment, marker
from callsaver_infra.stateful_changes import (
    ALLOW_LABEL,
    STATEFUL_CREATE_ONLY,
    AssemblyStack,
    DeployedTemplates,
    GateResult,
    Impact,
    StatefulChange,
    find_stateful_changes,
    main,
    read_assembly,
    render_markdown,
)
from tests.helpers import Synthesized, cdk

STORAGE = EnvNames("staging").storage_stack
SECRETS = EnvNames("staging").secrets_stack


def _logical_id(template: dict[str, Any], kind: str, path_part: str = "") -> str:
    return str(
        next(
            k
            for k, v in template["Resources"].items()
            if v["Type"] == kind and path_part in v.get("Metadata", {}).get("aws:cdk:path", "")
        )
    )


@pytest.fixture
def storage(synthesized: Synthesized) -> dict[str, Any]:
    return copy.deepcopy(synthesized.template_json(STORAGE))


@pytest.fixture
def secrets(synthesized: Synthesized) -> dict[str, Any]:
    return copy.deepcopy(synthesized.template_json(SECRETS))


def _impacts(changes: list[StatefulChange]) -> set[tuple[str, Impact]]:
    return {(c.logical_id, c.impact) for c in changes}


def test_create_only_properties_match_the_cloudformation_schemas() -> None:
    for kind, props in STATEFUL_CREATE_ONLY.items():
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-west-1", kind).schema
        assert set(schema["createOnlyProperties"]) == {f"/properties/{p}" for p in props}, kind


def test_no_change_and_a_new_stack_are_fine(storage: dict[str, Any]) -> None:
    assert find_stateful_changes(STORAGE, storage, copy.deepcopy(storage)) == []
    assert find_stateful_changes(STORAGE, None, storage) == []


def test_non_stateful_changes_are_ignored(storage: dict[str, Any]) -> None:
    deployed = copy.deepcopy(storage)
    policy = _logical_id(deployed, "AWS::S3::BucketPolicy")
    deployed["Resources"]["OldTopic"] = {"Type": "AWS::SNS::Topic"}  # removed by the new template: not stateful here
    del storage["Resources"][policy]
    assert find_stateful_changes(STORAGE, deployed, storage) == []


def test_renaming_a_bucket_replaces_it(storage: dict[str, Any]) -> None:
    deployed = copy.deepcopy(storage)
    bucket = _logical_id(deployed, "AWS::S3::Bucket")
    deployed["Resources"][bucket]["Properties"]["BucketName"] = "callsaver-sessions-old"
    (change,) = find_stateful_changes(STORAGE, deployed, storage)
    assert (change.logical_id, change.impact, change.resource_type) == (bucket, Impact.REPLACE, "AWS::S3::Bucket")
    assert change.detail == "BucketName 'callsaver-sessions-old' → 'callsaver-sessions-staging'"
    assert change.construct_path == f"{STORAGE}/SessionBucket/Bucket/Resource"


def test_removing_resources_destroys_or_orphans_them(secrets: dict[str, Any]) -> None:
    deployed = copy.deepcopy(secrets)
    retained = _logical_id(deployed, "AWS::SecretsManager::Secret", "OPENAI_API_KEY")
    deployed["Resources"]["OldBucket"] = {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Delete"}
    del secrets["Resources"][retained]
    assert _impacts(find_stateful_changes(SECRETS, deployed, secrets)) == {
        (retained, Impact.ORPHAN),  # every secret is RETAINed: the value survives, unmanaged
        ("OldBucket", Impact.DESTROY),
    }


def test_a_changed_logical_id_is_caught(storage: dict[str, Any]) -> None:
    """Moving a construct renames its logical id: CloudFormation removes the old resource and creates a new one."""
    deployed = copy.deepcopy(storage)
    bucket = _logical_id(storage, "AWS::S3::Bucket")
    storage["Resources"]["MovedBucket1234"] = storage["Resources"].pop(bucket)
    assert _impacts(find_stateful_changes(STORAGE, deployed, storage)) == {(bucket, Impact.ORPHAN)}


def test_type_change_and_losing_retain_are_caught(secrets: dict[str, Any]) -> None:
    deployed = copy.deepcopy(secrets)
    a = _logical_id(secrets, "AWS::SecretsManager::Secret", "OPENAI_API_KEY")
    b = _logical_id(secrets, "AWS::SecretsManager::Secret", "GOOGLE_API_KEY")
    secrets["Resources"][a]["Type"] = "AWS::SSM::Parameter"
    secrets["Resources"][b]["DeletionPolicy"] = "Delete"
    del secrets["Resources"][b]["UpdateReplacePolicy"]
    changes = find_stateful_changes(SECRETS, deployed, secrets)
    assert [(c.logical_id, c.impact, c.detail) for c in changes] == [
        (a, Impact.REPLACE, "type changes to AWS::SSM::Parameter"),
        (b, Impact.UNPROTECT, "DeletionPolicy Retain → Delete"),
        (b, Impact.UNPROTECT, "UpdateReplacePolicy Retain → Delete"),
    ]


def _cli_destructive(assembly: Path, stack: str, deployed: dict[str, Any], tmp_path: Path) -> set[tuple[str, str]]:
    """The stateful resources the real CLI's `cdk diff --fail-on destructive` reports, as (logical id, impact)."""
    old = tmp_path / f"{stack}.deployed.json"
    old.write_text(json.dumps(deployed))
    result = cdk("diff", "--app", str(assembly), "--template", str(old), stack, "--fail-on", "destructive")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = re.findall(rf"^  {re.escape(stack)}: (AWS::\S+) .*?(\S+) (will be \w+)$", result.stderr, re.M)
    return {(logical_id, impact) for kind, logical_id, impact in lines if kind in STATEFUL_CREATE_ONLY}


def test_gate_agrees_with_the_cdk_cli_on_stateful_resources(synthesized: Synthesized, tmp_path: Path) -> None:
    assembly = tmp_path / "cdk.out"
    shutil.copytree(synthesized.outdir, assembly)
    storage = synthesized.template_json(STORAGE)
    secrets = synthesized.template_json(SECRETS)
    deployed_storage = copy.deepcopy(storage)
    bucket = _logical_id(storage, "AWS::S3::Bucket")
    deployed_storage["Resources"][bucket]["Properties"]["BucketName"] = "callsaver-sessions-old"
    deployed_storage["Resources"]["OldBucket"] = {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "x-old"}}
    deployed_secrets = copy.deepcopy(secrets)
    renamed = _logical_id(secrets, "AWS::SecretsManager::Secret", "OPENAI_API_KEY")
    deployed_secrets["Resources"][renamed]["Properties"]["Name"] = "callsaver/staging/agent/OLD_NAME"
    deployed_secrets["Resources"]["OldSecret"] = {
        "Type": "AWS::SecretsManager::Secret",
        "Properties": {"Name": "old"},
        "DeletionPolicy": "Retain",
    }
    for stack, deployed, new in ((STORAGE, deployed_storage, storage), (SECRETS, deployed_secrets, secrets)):
        ours = {(c.logical_id, c.impact.value) for c in find_stateful_changes(stack, deployed, new)}
        assert ours == _cli_destructive(assembly, stack, deployed, tmp_path)
        assert len(ours) == 2


def test_read_assembly_finds_stacks_and_bootstrap_roles(synthesized: Synthesized) -> None:
    stacks = {s.name: s for s in read_assembly(synthesized.outdir)}
    assert set(stacks) == set(synthesized.stack_names())
    s = stacks[STORAGE]
    assert (s.account, s.region) == ("836347236108", "us-west-1")
    assert s.lookup_role_arn == (
        "arn:${AWS::Partition}:iam::836347236108:role/cdk-hnb659fds-lookup-role-836347236108-us-west-1"
    )
    assert s.template() == synthesized.template_json(STORAGE)


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        # The stacks live in the environments' account; the assumed role's credentials act in it.
        "MOTO_ACCOUNT_ID": "836347236108",
    }.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(
    ("role", "expected_role"),
    [
        ("lookup", "cdk-hnb659fds-lookup-role-836347236108-us-west-1"),
        ("deploy", "cdk-hnb659fds-deploy-role-836347236108-us-west-1"),
    ],
)
def test_deployed_templates_are_read_through_the_bootstrap_role(
    synthesized: Synthesized, fake_aws: None, role: Any, expected_role: str
) -> None:
    stacks = {s.name: s for s in read_assembly(synthesized.outdir)}
    assumed: list[str] = []

    def client(service: str, **kwargs: Any) -> Any:
        made = boto3.client(service, **kwargs)
        if service == "sts":
            original = made.assume_role

            def assume_role(**args: Any) -> Any:
                assumed.append(args["RoleArn"])
                return original(**args)

            made.assume_role = assume_role
        return made

    deployed = {"Resources": {"B": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "callsaver-old"}}}}
    with mock_aws():
        boto3.client("cloudformation", region_name="us-west-1").create_stack(
            StackName=STORAGE, TemplateBody=json.dumps(deployed)
        )
        reader = DeployedTemplates(role, client_factory=client)
        assert reader.get(stacks[STORAGE]) == deployed
        assert reader.get(stacks[SECRETS]) is None  # not deployed yet
    assert assumed == [f"arn:aws:iam::836347236108:role/{expected_role}"] * 2


def test_base_role_reads_with_the_callers_own_credentials(synthesized: Synthesized, fake_aws: None) -> None:
    """CI's diff role may only GetTemplate/DescribeStacks: the gate must not try to assume any bootstrap role."""
    stacks = {s.name: s for s in read_assembly(synthesized.outdir)}
    made: list[str] = []

    def client(service: str, **kwargs: Any) -> Any:
        made.append(service)
        return boto3.client(service, **kwargs)

    deployed = {"Resources": {"B": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "callsaver-old"}}}}
    with mock_aws():
        boto3.client("cloudformation", region_name="us-west-1").create_stack(
            StackName=STORAGE, TemplateBody=json.dumps(deployed)
        )
        assert DeployedTemplates("base", client_factory=client).get(stacks[STORAGE]) == deployed
    assert made == ["cloudformation"]


def _write_deployed(directory: Path, stack: str, template: dict[str, Any]) -> None:
    directory.mkdir(exist_ok=True)
    (directory / f"{stack}.template.json").write_text(json.dumps(template))


def test_main_blocks_allows_and_reports(synthesized: Synthesized, tmp_path: Path, capsys: Any) -> None:
    deployed_dir = tmp_path / "deployed"
    deployed = copy.deepcopy(synthesized.template_json(STORAGE))
    deployed["Resources"][_logical_id(deployed, "AWS::S3::Bucket")]["Properties"]["BucketName"] = "old-name"
    _write_deployed(deployed_dir, STORAGE, deployed)
    report = tmp_path / "gate.md"
    args = ["--assembly", str(synthesized.outdir), "--deployed-dir", str(deployed_dir), "--report", str(report)]

    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"{STORAGE}: AWS::S3::Bucket {STORAGE}/SessionBucket/Bucket/Resource" in out
    assert (
        f"1 destructive change(s) to stateful resources in {len(synthesized.stack_names())} stack(s) (blocked)" in out
    )
    text = report.read_text()
    assert "**blocked**" in text and f"`{ALLOW_LABEL}`" in text and "will be replaced: BucketName 'old-name'" in text

    assert main([*args, "--allow"]) == 0
    assert "**allowed**" in report.read_text()

    _write_deployed(deployed_dir, STORAGE, synthesized.template_json(STORAGE))
    assert main(args) == 0
    assert report.read_text().startswith("✅ **Stateful resources** (S3 buckets, Secrets Manager secrets): no")


def test_main_fails_closed_when_it_cannot_check(tmp_path: Path) -> None:
    report = tmp_path / "gate.md"
    assert (
        main(["--assembly", str(tmp_path / "missing"), "--deployed-dir", str(tmp_path), "--report", str(report)]) == 2
    )
    assert "could not check" in report.read_text()


def test_markdown_escapes_table_cells() -> None:
    change = StatefulChange("S", "L", "AWS::S3::Bucket", Impact.REPLACE, "BucketName 'a|b' → 'c'")
    text = render_markdown(GateResult(("S",), (), (change,)), allowed=False)
    assert "| `S` | `L` | `AWS::S3::Bucket` | will be replaced: BucketName 'a\\|b' → 'c' |" in text


def test_comment_has_marker_verdict_and_folded_diff() -> None:
    diff = (
        "Stack Callsaver-Storage-staging\n\x1b[32m[+] AWS::S3::Bucket\x1b[0m\n\n"
        "✨  Number of stacks with differences: 1\n"
    )
    body = build_comment("staging", diff, "✅ verdict\n", commit="0123456789abcdef", run_url="https://run")
    assert body.startswith(marker("staging") + "\n") and marker("staging") == "<!-- cdk-diff:staging -->"
    assert "✅ verdict" in body and "(1 stack(s) with differences)" in body
    assert "[+] AWS::S3::Bucket" in body and "\x1b" not in body
    assert "Commit `0123456789ab`" in body and "[workflow run](https://run)" in body


def test_comment_fence_cannot_be_closed_by_the_diff_and_is_truncated() -> None:
    body = build_comment("production", "a ``` b\n" + "x" * (MAX_DIFF_CHARS + 10), None, commit="c", run_url="u")
    assert "\n````text\n" in body and "\n````\n" in body
    assert "The diff is cut at 60,000 characters" in body
    assert "did not run" in body  # no gate verdict file
    assert len(body) < 65_536


def test_comment_when_the_diff_never_ran() -> None:
    body = build_comment("staging", None, None, commit="c", run_url="u")
    assert "(no output: cdk diff did not run; see the workflow run)" in body


def test_assembly_stack_role_choice() -> None:
    stack = AssemblyStack("S", "1", "r", Path("t"), lookup_role_arn="L", deploy_role_arn="D")
    assert (stack.role_arn("lookup"), stack.role_arn("deploy")) == ("L", "D")


def test_the_comment_names_the_agent_image_from_the_assembly(synthesized: Any, tmp_path: Path) -> None:
    from callsaver_infra.pr_comment import main

    out = tmp_path / "comment.md"
    assert main(["--env", "staging", "--commit", "c", "--run-url", "u", "--out", str(out),
                 "--assembly", str(synthesized.outdir)]) == 0  # fmt: skip
    assert "Agent image this would deploy: `callsaver-agent:v1.0.0`" in out.read_text()
    assert "Agent image" not in build_comment("staging", None, None, commit="c", run_url="u")
