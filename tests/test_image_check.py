"""`callsaver-infra check-image` against a local AWS endpoint: moto's server on 127.0.0.1 (real AWS is unreachable
from here), whose ECR stores pushed manifests (PutImage) and, with IAM enforcement switched on, denies by policy."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from callsaver_infra.app.config import load_environments
from callsaver_infra.ops import aws_clients
from callsaver_infra.ops.cli import EXIT_ERROR, EXIT_NOT_READY, EXIT_OK, main
from callsaver_infra.ops.image_check import ImageCheckError, check_image, tag_from_cdk_args, tag_in_assembly
from tests.helpers import CONFIG_DIR, Synthesized

ENV = "local"  # moto's account, 123456789012
REPOSITORY = "callsaver-agent"
SHA = "0123456789abcdef0123456789abcdef01234567"


def manifest(n: int) -> str:
    """A distinct image manifest (Docker v2 schema 2); moto's ECR keys images by manifest."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 7023,
                "digest": f"sha256:{n:064x}",
            },
            "layers": [],
        }
    )


@pytest.fixture
def ecr(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An ECR client on a fresh moto backend holding the (empty) agent repository; the CLI uses the same endpoint."""
    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    client = boto3.client("ecr", region_name="us-west-1", endpoint_url=moto_endpoint)
    client.create_repository(repositoryName=REPOSITORY, imageTagMutability="IMMUTABLE")
    yield client


def _run(*argv: str) -> int:
    return main(["--config-dir", str(CONFIG_DIR), "check-image", "--env", ENV, *argv])


def test_an_existing_image_passes_and_names_the_digest(ecr: Any, capsys: pytest.CaptureFixture[str]) -> None:
    digest = ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest(1), imageTag=SHA)["image"]["imageId"]
    assert _run() == EXIT_OK
    out = capsys.readouterr().out
    assert f"ok: {REPOSITORY}:{SHA} exists ({digest['imageDigest'][:19]}..." in out
    assert "tag from config/local.toml agent.image_tag" in out


def test_a_missing_tag_is_refused_with_the_most_recent_tags(ecr: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from moto.ecr.models import ecr_backends

    for n in range(1, 8):
        ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest(n), imageTag=f"v1.0.{n}")
    # moto stamps pushes in whole seconds; spread them (in the in-process server's backend) so that push time and
    # listing order disagree: v1.0.4 is the newest, v1.0.5 the oldest.
    pushed_order = ["v1.0.5", "v1.0.1", "v1.0.7", "v1.0.2", "v1.0.6", "v1.0.3", "v1.0.4"]
    for image in ecr_backends["123456789012"]["us-west-1"].repositories[REPOSITORY].images:
        image.image_pushed_at = 1_700_000_000 + 60 * pushed_order.index(image.image_tags[0])
    assert _run() == EXIT_NOT_READY
    err = capsys.readouterr().err
    assert f"image {REPOSITORY}:{SHA} is not in repository {REPOSITORY} (account 123456789012, us-west-1)" in err
    assert "nothing was deployed" in err
    assert "The 5 most recent tags there: v1.0.4, v1.0.3, v1.0.6, v1.0.2, v1.0.7." in err
    assert "v1.0.1" not in err and "v1.0.5" not in err
    assert "set agent.image_tag in config/local.toml to a tag that exists" in err


def test_an_empty_repository_says_so(ecr: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("--tag", "v2.0.0") == EXIT_NOT_READY
    assert "The repository holds no tagged image yet." in capsys.readouterr().err


def test_a_missing_repository_names_the_registry_stack(ecr: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ecr.delete_repository(repositoryName=REPOSITORY)
    assert _run() == EXIT_NOT_READY
    err = capsys.readouterr().err
    assert f"repository {REPOSITORY} (account 123456789012, us-west-1) does not exist" in err
    assert "npx cdk deploy Callsaver-Registry -c env=registry" in err


@pytest.mark.parametrize("tag", ["latest", "main", "v1", "v1.2", "-bad"])
def test_a_moving_or_malformed_tag_is_an_error_before_any_call(
    tag: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: a call would fail differently
    assert _run(f"--tag={tag}") == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"image tag {tag!r}" in err and "full commit SHA" in err


def test_no_permission_names_the_identity_and_the_permission(
    ecr: Any, moto_endpoint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto enforces IAM policies once INITIAL_NO_AUTH_ACTION_COUNT is reached (here: at once); its denial is a
    bare 403 rather than ECR's AccessDeniedException (that one is covered below)."""
    from moto import settings

    iam = boto3.client("iam", region_name="us-west-1", endpoint_url=moto_endpoint)
    iam.create_user(UserName="deployer")
    iam.put_user_policy(
        UserName="deployer",
        PolicyName="NotEcr",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    # The CLI's session caches the credentials it first resolved: start a new one for the deployer's key.
    monkeypatch.setattr(aws_clients, "DEFAULT_SESSION", None)
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    assert _run() == EXIT_ERROR
    err = capsys.readouterr().err
    assert "arn:aws:iam::123456789012:user/deployer may not read the agent images" in err
    assert "ecr:DescribeImages on arn:aws:ecr:us-west-1:123456789012:repository/callsaver-agent was denied" in err
    assert key["SecretAccessKey"] not in err


def test_ecr_access_denied_exception_is_reported_the_same_way() -> None:
    """ECR's own denial (AccessDeniedException, HTTP 400), as botocore parses it, through botocore's Stubber."""
    config = load_environments(CONFIG_DIR)["staging"]
    ecr = boto3.client("ecr", region_name="us-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    sts = boto3.client("sts", region_name="us-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(ecr) as ecr_stub, Stubber(sts) as sts_stub:
        ecr_stub.add_client_error("describe_images", "AccessDeniedException", "not authorized", 400)
        sts_stub.add_response(
            "get_caller_identity",
            {
                "UserId": "AROAEXAMPLE:deploy-staging-1",
                "Account": "836347236108",
                "Arn": "arn:aws:sts::836347236108:assumed-role/callsaver-ci-deploy-staging/deploy-staging-1",
            },
        )
        with pytest.raises(ImageCheckError) as e:
            check_image(config, "v1.0.0", ecr, sts)
    assert str(e.value).startswith(
        "arn:aws:sts::836347236108:assumed-role/callsaver-ci-deploy-staging/deploy-staging-1 may not read the "
        "agent images: ecr:DescribeImages on arn:aws:ecr:us-west-1:836347236108:repository/callsaver-agent"
    )


def test_the_tag_make_deploy_would_deploy(synthesized: Synthesized, tmp_path: Path) -> None:
    envs = load_environments(CONFIG_DIR)
    staging = envs["staging"]
    assert tag_from_cdk_args(staging, "") == ("v1.0.0", "config/staging.toml agent.image_tag")
    assert tag_from_cdk_args(staging, f"--require-approval never -c agentImageTag={SHA}") == (
        SHA,
        "-c agentImageTag",
    )
    # With --app <assembly>, what the synthesized template holds, whatever config says now.
    assembly = tmp_path / "cdk.out"
    assembly.mkdir()
    name = "Callsaver-Agent-staging.template.json"
    template = (synthesized.outdir / name).read_text().replace(":v1.0.0", f":{SHA}")
    (assembly / name).write_text(template)
    assert tag_from_cdk_args(staging, f"--app {assembly} --require-approval never") == (
        SHA,
        f"the cloud assembly {assembly}",
    )
    assert tag_in_assembly(envs["production"], synthesized.outdir) == "v1.0.0"
    shutil.rmtree(assembly)
    with pytest.raises(ImageCheckError, match="cannot read .*Callsaver-Agent-staging.template.json"):
        tag_in_assembly(staging, assembly)


def test_cdk_args_with_an_assembly_reach_the_check(
    ecr: Any, synthesized: Synthesized, capsys: pytest.CaptureFixture[str]
) -> None:
    """The exact form the Makefile uses: --cdk-args="$(CDK_ARGS)" (argparse needs the = for a value with --)."""
    ecr.put_image(repositoryName=REPOSITORY, imageManifest=manifest(3), imageTag=SHA)
    assert _run(f"--cdk-args=--app {synthesized.outdir} --require-approval never") == EXIT_OK
    assert f"tag from the cloud assembly {synthesized.outdir}" in capsys.readouterr().out
