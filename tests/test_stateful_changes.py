"""The destructive-change gate (any deletion or replacement outside an allowlist), and the pull-request comment it
feeds.

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

from callsaver_infra.app.names import EnvNames, pr_comment_marker
from callsaver_infra.ops.cloud_assembly import AssemblyStack, read_assembly
from callsaver_infra.ops.pr_comment import MAX_DIFF_CHARS, build_comment
from callsaver_infra.ops.stateful_changes import (
    ALLOW_LABEL,
    CREATE_ONLY,
    SAFE_TO_REPLACE,
    DeployedTemplates,
    DestructiveChange,
    GateResult,
    Impact,
    find_destructive_changes,
    main,
    render_markdown,
)
from tests.helpers import Synthesized, cdk

STORAGE = EnvNames("staging").storage_stack
SECRETS = EnvNames("staging").secrets_stack
AGENT = EnvNames("staging").agent_stack


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


def _impacts(changes: list[DestructiveChange]) -> set[tuple[str, Impact]]:
    return {(c.logical_id, c.impact) for c in changes}


SNAPSHOTS = Path(__file__).parent / "__snapshots__"


def test_create_only_properties_match_the_cloudformation_schemas() -> None:
    for kind, props in CREATE_ONLY.items():
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-west-1", kind).schema
        assert set(schema.get("createOnlyProperties", [])) == {f"/properties/{p}" for p in props}, kind


def test_the_replacement_table_covers_every_type_the_app_synthesizes() -> None:
    """The snapshots hold every stack of every environment, the CI and the registry stack."""
    files = sorted(SNAPSHOTS.glob("*/*.json"))
    assert len(files) >= 17
    types = {r["Type"] for f in files for r in json.loads(f.read_text()).get("Resources", {}).values()}
    assert types - set(CREATE_ONLY) == set()
    assert set(SAFE_TO_REPLACE) <= types  # no allowlist entry for a type the app does not have


def test_no_change_and_a_new_stack_are_fine(storage: dict[str, Any]) -> None:
    assert find_destructive_changes(STORAGE, storage, copy.deepcopy(storage)) == []
    assert find_destructive_changes(STORAGE, None, storage) == []


def test_in_place_updates_pass(storage: dict[str, Any]) -> None:
    deployed = copy.deepcopy(storage)
    bucket = _logical_id(storage, "AWS::S3::Bucket")
    storage["Resources"][bucket]["Properties"]["Tags"] = [{"Key": "team", "Value": "voice"}]
    assert find_destructive_changes(STORAGE, deployed, storage) == []


# Templates an ordinary deploy of this app produces from the deployed ones, one per allowlisted type: an image
# change (task definition), a key rotation (access key), a new alarm name and dashboard name, a renamed policy.
SAFE_EDITS: dict[str, tuple[str, str, str | None]] = {
    "AWS::ECS::TaskDefinition": ("agent_stack", "ContainerDefinitions", None),
    "AWS::IAM::AccessKey": ("iam_stack", "Serial", None),
    "AWS::CloudWatch::Alarm": ("monitoring_stack", "AlarmName", "callsaver-staging-renamed"),
    "AWS::CloudWatch::Dashboard": ("monitoring_stack", "DashboardName", "Callsaver-renamed"),
    "AWS::ApplicationAutoScaling::ScalingPolicy": ("agent_stack", "PolicyName", "renamed"),
}


@pytest.mark.parametrize("kind", sorted(SAFE_TO_REPLACE))
def test_each_type_safe_to_replace_passes_replacement_and_removal(synthesized: Synthesized, kind: str) -> None:
    assert kind in SAFE_EDITS, f"add an edit for {kind}"
    stack_attr, prop, value = SAFE_EDITS[kind]
    stack = getattr(EnvNames("staging"), stack_attr)
    deployed = copy.deepcopy(synthesized.template_json(stack))
    new = copy.deepcopy(deployed)
    logical_id = _logical_id(new, kind)
    props = new["Resources"][logical_id]["Properties"]
    if prop == "ContainerDefinitions":
        props[prop][0]["Image"] = "example.invalid/agent:v9.9.9"
    elif prop == "Serial":
        props[prop] += 1
    else:
        props[prop] = value
    assert prop in CREATE_ONLY[kind]  # the edit really replaces the resource
    assert find_destructive_changes(stack, deployed, new) == []
    del new["Resources"][logical_id]
    assert find_destructive_changes(stack, deployed, new) == []


def test_the_rotated_key_still_must_keep_its_retain_policy(synthesized: Synthesized) -> None:
    stack = EnvNames("staging").iam_stack
    deployed = synthesized.template_json(stack)
    new = copy.deepcopy(deployed)
    key = _logical_id(new, "AWS::IAM::AccessKey")
    new["Resources"][key]["UpdateReplacePolicy"] = "Delete"
    (change,) = find_destructive_changes(stack, deployed, new)
    assert (change.logical_id, change.impact) == (key, Impact.UNPROTECT)


TABLE = {"Type": "AWS::DynamoDB::Table", "Properties": {"TableName": "calls", "KeySchema": [{"AttributeName": "id"}]}}


@pytest.mark.parametrize(
    ("deployed_resource", "new_resource", "impact", "detail"),
    [
        # A table the schema table does not know: any property change may replace it.
        (TABLE, {**TABLE, "Properties": {**TABLE["Properties"], "TableName": "calls-v2"}}, Impact.REPLACE,
         "its properties change, and the gate does not know which properties of this type replace it"),
        (TABLE, None, Impact.DESTROY, "removed from the template, and its DeletionPolicy deletes it"),
        # A retained log group: renaming replaces it (the old one stays, unmanaged); removing orphans it.
        ({"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "/a"}, "DeletionPolicy": "Retain"},
         {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "/b"}, "DeletionPolicy": "Retain"},
         Impact.REPLACE, "LogGroupName '/a' → '/b'"),
        ({"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "/a"}, "DeletionPolicy": "Retain"}, None,
         Impact.ORPHAN, "removed from the template; DeletionPolicy Retain keeps it"),
        # An unknown type, removed.
        ({"Type": "AWS::Future::Thing", "Properties": {}}, None, Impact.DESTROY, "removed from the template"),
        ({"Type": "AWS::Future::Thing", "Properties": {"A": 1}}, {"Type": "AWS::Future::Thing", "Properties": {"A": 2}},
         Impact.REPLACE, "its properties change, and the gate does not know"),
        # Types the app has that are not on the allowlist: a role (its unique id changes), a bucket policy.
        ({"Type": "AWS::IAM::Role", "Properties": {"RoleName": "a"}}, {"Type": "AWS::IAM::Role",
         "Properties": {"RoleName": "b"}}, Impact.REPLACE, "RoleName 'a' → 'b'"),
        ({"Type": "AWS::S3::BucketPolicy", "Properties": {"Bucket": "b"}}, None, Impact.DESTROY, "removed"),
    ],
)  # fmt: skip
def test_deletions_and_replacements_outside_the_allowlist_fail(
    deployed_resource: dict[str, Any], new_resource: dict[str, Any] | None, impact: Impact, detail: str
) -> None:
    deployed = {"Resources": {"Thing": deployed_resource}}
    new = {"Resources": {"Thing": new_resource} if new_resource else {}}
    (change,) = find_destructive_changes("Callsaver-Data-staging", deployed, new)
    assert (change.logical_id, change.impact, change.resource_type) == ("Thing", impact, deployed_resource["Type"])
    assert change.detail.startswith(detail)
    line = change.describe()
    assert line.startswith(f"Callsaver-Data-staging: {deployed_resource['Type']} Thing {impact.value}: {detail}")
    assert "To " in line and (change.remedy in line)


def test_a_replacement_cascades_through_create_only_references() -> None:
    """A replaced VPC gets a new id: the subnet naming it in VpcId is replaced too, and the association after it."""
    deployed = {
        "Resources": {
            "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
            "Subnet": {"Type": "AWS::EC2::Subnet", "Properties": {"VpcId": {"Ref": "Vpc"}, "CidrBlock": "10.0.0.0/24"}},
            "Assoc": {"Type": "AWS::EC2::SubnetRouteTableAssociation",
                      "Properties": {"SubnetId": {"Ref": "Subnet"}, "RouteTableId": "rtb-1"}},
            "Sg": {"Type": "AWS::EC2::SecurityGroupIngress",
                   "Properties": {"CidrIp": {"Fn::GetAtt": ["Vpc", "CidrBlock"]}}},
        }
    }  # fmt: skip
    new = copy.deepcopy(deployed)
    new["Resources"]["Vpc"]["Properties"]["CidrBlock"] = "10.1.0.0/16"
    changes = {c.logical_id: c.detail for c in find_destructive_changes("S", deployed, new)}
    assert changes == {
        "Vpc": "CidrBlock '10.0.0.0/16' → '10.1.0.0/16'",
        "Subnet": "its VpcId names Vpc, which is replaced",
        "Assoc": "its SubnetId names Subnet, which is replaced",
        # Not in CREATE_ONLY: any reference to a replaced resource counts.
        "Sg": "it names Vpc, which is replaced",
    }


def test_renaming_a_bucket_replaces_it(storage: dict[str, Any]) -> None:
    deployed = copy.deepcopy(storage)
    bucket = _logical_id(deployed, "AWS::S3::Bucket")
    deployed["Resources"][bucket]["Properties"]["BucketName"] = "callsaver-sessions-old"
    change, policy = find_destructive_changes(STORAGE, deployed, storage)
    assert (change.logical_id, change.impact, change.resource_type) == (bucket, Impact.REPLACE, "AWS::S3::Bucket")
    assert change.detail == "BucketName 'callsaver-sessions-old' → 'callsaver-sessions-staging'"
    assert change.construct_path == f"{STORAGE}/SessionBucket/Bucket/Resource"
    # The bucket policy names the bucket in its create-only Bucket: it is replaced with it.
    assert (policy.resource_type, policy.impact) == ("AWS::S3::BucketPolicy", Impact.REPLACE)
    assert policy.detail == f"its Bucket names {bucket}, which is replaced"


def test_removing_resources_destroys_or_orphans_them(secrets: dict[str, Any]) -> None:
    deployed = copy.deepcopy(secrets)
    retained = _logical_id(deployed, "AWS::SecretsManager::Secret", "OPENAI_API_KEY")
    deployed["Resources"]["OldBucket"] = {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Delete"}
    del secrets["Resources"][retained]
    assert _impacts(find_destructive_changes(SECRETS, deployed, secrets)) == {
        (retained, Impact.ORPHAN),  # every secret is RETAINed: the value survives, unmanaged
        ("OldBucket", Impact.DESTROY),
    }


def test_a_changed_logical_id_is_caught(storage: dict[str, Any]) -> None:
    """Moving a construct renames its logical id: CloudFormation removes the old resource and creates a new one."""
    deployed = copy.deepcopy(storage)
    bucket = _logical_id(storage, "AWS::S3::Bucket")
    storage["Resources"]["MovedBucket1234"] = storage["Resources"].pop(bucket)
    assert _impacts(find_destructive_changes(STORAGE, deployed, storage)) == {(bucket, Impact.ORPHAN)}


def test_type_change_and_losing_retain_are_caught(secrets: dict[str, Any]) -> None:
    deployed = copy.deepcopy(secrets)
    a = _logical_id(secrets, "AWS::SecretsManager::Secret", "OPENAI_API_KEY")
    b = _logical_id(secrets, "AWS::SecretsManager::Secret", "GOOGLE_API_KEY")
    policy = _logical_id(secrets, "AWS::SecretsManager::ResourcePolicy", "OPENAI_API_KEY")
    secrets["Resources"][a]["Type"] = "AWS::SSM::Parameter"
    secrets["Resources"][b]["DeletionPolicy"] = "Delete"
    del secrets["Resources"][b]["UpdateReplacePolicy"]
    changes = find_destructive_changes(SECRETS, deployed, secrets)
    assert [(c.logical_id, c.impact, c.detail) for c in changes] == [
        (a, Impact.REPLACE, "type changes to AWS::SSM::Parameter"),
        (policy, Impact.REPLACE, f"its SecretId names {a}, which is replaced"),
        (b, Impact.UNPROTECT, "DeletionPolicy Retain → Delete"),
        (b, Impact.UNPROTECT, "UpdateReplacePolicy Retain → Delete"),
    ]


def _cli_destructive(assembly: Path, stack: str, deployed: dict[str, Any], tmp_path: Path) -> set[tuple[str, str]]:
    """What the real CLI's `cdk diff --fail-on destructive` reports outside SAFE_TO_REPLACE, as (logical id, impact)."""
    old = tmp_path / f"{stack}.deployed.json"
    old.write_text(json.dumps(deployed))
    result = cdk(
        "diff", "--app", str(assembly), "--template", str(old), stack, "--exclusively", "--fail-on", "destructive"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = re.findall(rf"^  {re.escape(stack)}: (AWS::\S+) .*?(\S+) (will be \w+)$", result.stderr, re.M)
    return {(logical_id, impact) for kind, logical_id, impact in lines if kind not in SAFE_TO_REPLACE}


def test_gate_agrees_with_the_cdk_cli(synthesized: Synthesized, tmp_path: Path) -> None:
    """Same replacements (direct and cascaded), removals and orphans as the CLI, outside SAFE_TO_REPLACE."""
    assembly = tmp_path / "cdk.out"
    shutil.copytree(synthesized.outdir, assembly)
    storage = synthesized.template_json(STORAGE)
    secrets = synthesized.template_json(SECRETS)
    agent = synthesized.template_json(AGENT)
    deployed_storage = copy.deepcopy(storage)
    bucket = _logical_id(storage, "AWS::S3::Bucket")
    deployed_storage["Resources"][bucket]["Properties"]["BucketName"] = "callsaver-sessions-old"
    deployed_storage["Resources"]["OldBucket"] = {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "x-old"}}
    deployed_storage["Resources"]["OldTopic"] = {"Type": "AWS::SNS::Topic", "Properties": {}}
    deployed_secrets = copy.deepcopy(secrets)
    renamed = _logical_id(secrets, "AWS::SecretsManager::Secret", "OPENAI_API_KEY")
    deployed_secrets["Resources"][renamed]["Properties"]["Name"] = "callsaver/staging/agent/OLD_NAME"
    deployed_secrets["Resources"]["OldSecret"] = {
        "Type": "AWS::SecretsManager::Secret",
        "Properties": {"Name": "old"},
        "DeletionPolicy": "Retain",
    }
    deployed_agent = copy.deepcopy(agent)
    log_group = _logical_id(agent, "AWS::Logs::LogGroup")
    deployed_agent["Resources"][log_group]["Properties"]["LogGroupName"] = "/callsaver/staging/old"
    task = _logical_id(agent, "AWS::ECS::TaskDefinition")
    deployed_agent["Resources"][task]["Properties"]["ContainerDefinitions"][0]["Image"] = "example.invalid/a:v0"
    cases = ((STORAGE, deployed_storage, storage), (SECRETS, deployed_secrets, secrets), (AGENT, deployed_agent, agent))
    for stack, deployed, new in cases:
        changes = find_destructive_changes(stack, deployed, new)
        ours = {(c.logical_id, c.impact.value) for c in changes}
        assert ours == _cli_destructive(assembly, stack, deployed, tmp_path), stack
        assert len(ours) == {STORAGE: 4, SECRETS: 3, AGENT: 1}[stack]
        assert task not in {c.logical_id for c in changes}  # replaced, but safe to replace


def test_read_assembly_finds_stacks_and_bootstrap_roles(synthesized: Synthesized) -> None:
    """The roles come from the manifest, which carries the environment's bootstrap qualifier (staging: cstaging)."""
    stacks = {s.name: s for s in read_assembly(synthesized.outdir)}
    assert set(stacks) == set(synthesized.stack_names())
    s = stacks[STORAGE]
    assert (s.account, s.region) == ("836347236108", "us-west-1")
    assert s.lookup_role_arn == (
        "arn:${AWS::Partition}:iam::836347236108:role/cdk-cstaging-lookup-role-836347236108-us-west-1"
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
        ("lookup", "cdk-cstaging-lookup-role-836347236108-us-west-1"),
        ("deploy", "cdk-cstaging-deploy-role-836347236108-us-west-1"),
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
    assert "To update it in place: keep its type and create-only properties as deployed" in out
    assert f"If intended: review, then add the label {ALLOW_LABEL}" in out
    assert (
        f"2 destructive change(s) in {len(synthesized.stack_names())} stack(s) (blocked)" in out  # bucket and policy
    )
    text = report.read_text()
    assert "**blocked**" in text and f"`{ALLOW_LABEL}`" in text and "will be replaced: BucketName 'old-name'" in text

    assert main([*args, "--allow"]) == 0
    assert "**allowed**" in report.read_text()

    _write_deployed(deployed_dir, STORAGE, synthesized.template_json(STORAGE))
    assert main(args) == 0
    assert report.read_text().startswith("✅ **Destructive changes**: none in ")
    assert "(`ECS::TaskDefinition`, `IAM::AccessKey`," in report.read_text()


def test_main_fails_closed_when_it_cannot_check(tmp_path: Path) -> None:
    report = tmp_path / "gate.md"
    assert (
        main(["--assembly", str(tmp_path / "missing"), "--deployed-dir", str(tmp_path), "--report", str(report)]) == 2
    )
    assert "could not check" in report.read_text()


def test_markdown_escapes_table_cells() -> None:
    change = DestructiveChange("S", "L", "AWS::S3::Bucket", Impact.REPLACE, "BucketName 'a|b' → 'c'")
    text = render_markdown(GateResult(("S",), (), (change,)), allowed=False)
    assert "| `S` | `L` | `AWS::S3::Bucket` | will be replaced: BucketName 'a\\|b' → 'c' | To update it in" in text


def test_comment_has_heading_verdict_and_folded_diff() -> None:
    diff = (
        "Stack Callsaver-Storage-staging\n\x1b[32m[+] AWS::S3::Bucket\x1b[0m\n\n"
        "✨  Number of stacks with differences: 1\n"
    )
    body = build_comment("staging", diff, "✅ verdict\n", commit="0123456789abcdef", run_url="https://run")
    assert body.startswith("### `cdk diff` — staging\n")
    assert "✅ verdict" in body and "(1 stack(s) with differences)" in body
    assert "[+] AWS::S3::Bucket" in body and "\x1b" not in body
    assert "Commit `0123456789ab`" in body and "[workflow run](https://run)" in body


def test_comment_fence_cannot_be_closed_by_the_diff_and_is_truncated() -> None:
    body = build_comment("production", "a ``` b\n" + "x" * (MAX_DIFF_CHARS + 10), None, commit="c", run_url="u")
    assert "\n````text\n" in body and "\n````\n" in body
    assert "The diff is cut at 60,000 characters" in body
    assert "did not run" in body  # no gate verdict file
    # GitHub's limit, with the marker the sticky-comment action appends.
    assert len(body + "\n" + pr_comment_marker("production")) < 65_536


def test_comment_when_the_diff_never_ran() -> None:
    body = build_comment("staging", None, None, commit="c", run_url="u")
    assert "(no output: cdk diff did not run; see the workflow run)" in body


def test_assembly_stack_role_choice() -> None:
    stack = AssemblyStack("S", "1", "r", Path("t"), lookup_role_arn="L", deploy_role_arn="D")
    assert (stack.role_arn("lookup"), stack.role_arn("deploy")) == ("L", "D")


def test_the_comment_names_the_agent_image_from_the_assembly(synthesized: Any, tmp_path: Path) -> None:
    from callsaver_infra.ops.pr_comment import main

    out = tmp_path / "comment.md"
    assert main(["--env", "staging", "--commit", "c", "--run-url", "u", "--out", str(out),
                 "--assembly", str(synthesized.outdir)]) == 0  # fmt: skip
    assert "Agent image this would deploy: `callsaver-agent:v1.0.0`" in out.read_text()
    assert "Agent image" not in build_comment("staging", None, None, commit="c", run_url="u")
