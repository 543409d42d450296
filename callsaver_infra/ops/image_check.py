"""The pre-deploy image check: the agent image a deploy would run must exist in the environment's ECR repository.

ECS cannot start a task whose image is missing; without this check the deploy would only fail after the circuit
breaker's retries, minutes later. `callsaver-infra check-image` runs before `cdk deploy` touches CloudFormation.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callsaver_infra.app.config import EnvironmentConfig, image_tag_problem
from callsaver_infra.app.names import REGISTRY_STACK, EnvNames
from callsaver_infra.app.regions import partition

# How many of the existing tags a refusal lists (most recent first).
RECENT_TAGS = 5
# The permission the check needs (besides none for sts:GetCallerIdentity).
DESCRIBE_PERMISSION = "ecr:DescribeImages"


class ImageMissingError(Exception):
    """The tag is not in the repository (or the repository does not exist); the deploy must not start."""


class ImageCheckError(Exception):
    """The check could not be made (no permission, a bad tag, an unreadable assembly)."""


@dataclass(frozen=True)
class ImageFound:
    """The image a deploy would run: repository, tag, digest and push time."""

    repository: str
    tag: str
    digest: str
    pushed_at: str


def tag_from_cdk_args(config: EnvironmentConfig, cdk_args: str) -> tuple[str, str]:
    """The tag `cdk deploy <cdk_args>` would deploy, and where it comes from: the image in an `--app <dir>` cloud
    assembly's agent template, else `-c agentImageTag=`, else config's agent.image_tag."""
    args = shlex.split(cdk_args)
    tag, source = config.agent.image_tag, f"config/{config.name}.toml agent.image_tag"
    for i, arg in enumerate(args):
        value = args[i + 1] if i + 1 < len(args) else ""
        if arg in ("-c", "--context") and value.startswith("agentImageTag="):
            tag, source = value.removeprefix("agentImageTag="), "-c agentImageTag"
        elif arg.startswith("--context=agentImageTag="):
            tag, source = arg.removeprefix("--context=agentImageTag="), "-c agentImageTag"
    for i, arg in enumerate(args):
        if arg in ("-a", "--app") and i + 1 < len(args) and Path(args[i + 1]).is_dir():
            assembly = Path(args[i + 1])
            return tag_in_assembly(config, assembly), f"the cloud assembly {assembly}"
    return tag, source


def tag_in_assembly(config: EnvironmentConfig, assembly: Path) -> str:
    """The agent image tag in a synthesized Callsaver-Agent-{env} template (what `cdk deploy --app` deploys)."""
    stack = EnvNames(config.name).agent_stack
    path = assembly / f"{stack}.template.json"
    try:
        template = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ImageCheckError(f"cannot read {path} ({e}); synthesize {config.name} first") from None
    images = [
        container.get("Image")
        for resource in template.get("Resources", {}).values()
        if resource.get("Type") == "AWS::ECS::TaskDefinition"
        for container in resource.get("Properties", {}).get("ContainerDefinitions", [])
    ]
    # The image is {"Fn::Join": ["", [<account>, ".dkr.ecr.", <region>, ".", {"Ref": "AWS::URLSuffix"},
    # "/<repository>:<tag>"]]}: the tag ends the last string part.
    suffix = f"/{config.agent.image_repository}:"
    tags = {part.removeprefix(suffix) for image in images for part in _strings(image) if part.startswith(suffix)}
    if len(tags) != 1:
        raise ImageCheckError(
            f"{path}: expected one image of {config.agent.image_repository} in the agent's task definition, "
            f"found {sorted(tags) or 'none'}"
        )
    return tags.pop()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def check_image(config: EnvironmentConfig, tag: str, ecr: Any, sts: Any) -> ImageFound:
    """DescribeImages by tag in the environment's registry (its account and region). Raise ImageMissingError with
    the most recent existing tags, or ImageCheckError naming the caller's identity and the missing permission."""
    from botocore.exceptions import ClientError

    problem = image_tag_problem(tag)
    if problem:
        raise ImageCheckError(f"image tag {tag!r} {problem}")
    repository = config.agent.image_repository
    where = f"{repository} (account {config.account}, {config.region})"
    try:
        described = ecr.describe_images(
            registryId=config.account, repositoryName=repository, imageIds=[{"imageTag": tag}]
        )["imageDetails"]
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code == "ImageNotFoundException":
            raise ImageMissingError(_missing_message(config, tag, ecr)) from None
        if code == "RepositoryNotFoundException":
            raise ImageMissingError(
                f"repository {where} does not exist, so image {repository}:{tag} cannot be deployed. Deploy the "
                f"registry (`npx cdk deploy {REGISTRY_STACK} -c env=registry`, docs/runbooks.md) and push the agent "
                "image"
            ) from None
        # ECR answers AccessDeniedException; any 403 is an authorization failure too (moto's server sends its
        # IAM denial as a bare 403).
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("AccessDeniedException", "AccessDenied") or status == 403:
            raise ImageCheckError(_denied_message(config, tag, sts)) from None
        raise
    (image,) = described
    pushed = image.get("imagePushedAt")
    return ImageFound(
        repository=repository,
        tag=tag,
        digest=str(image.get("imageDigest", "")),
        pushed_at=pushed.isoformat(timespec="seconds") if hasattr(pushed, "isoformat") else str(pushed or "?"),
    )


def recent_tags(config: EnvironmentConfig, ecr: Any, limit: int = RECENT_TAGS) -> list[str]:
    """The tags of the most recently pushed tagged images, newest first."""
    images: list[dict[str, Any]] = []
    for page in ecr.get_paginator("describe_images").paginate(
        registryId=config.account, repositoryName=config.agent.image_repository, filter={"tagStatus": "TAGGED"}
    ):
        images += page["imageDetails"]
    images.sort(key=lambda i: i.get("imagePushedAt") or 0, reverse=True)
    return [tag for image in images for tag in sorted(image.get("imageTags", []))][:limit]


def _missing_message(config: EnvironmentConfig, tag: str, ecr: Any) -> str:
    repository = config.agent.image_repository
    tags = recent_tags(config, ecr)
    existing = (
        f"the {len(tags)} most recent tags there: {', '.join(tags)}"
        if tags
        else "the repository holds no tagged image yet"
    )
    return (
        f"image {repository}:{tag} is not in repository {repository} (account {config.account}, "
        f"{config.region}); nothing was deployed. {existing[0].upper()}{existing[1:]}. Fix: push the image from the "
        f"agent repository's CI, or set agent.image_tag in config/{config.name}.toml to a tag that exists"
    )


def _denied_message(config: EnvironmentConfig, tag: str, sts: Any) -> str:
    try:
        identity = sts.get_caller_identity()["Arn"]
    except Exception:  # the identity is only for the message; its absence must not hide the real problem
        identity = "<unknown: sts:GetCallerIdentity failed>"
    region, account = config.region, config.account
    arn = f"arn:{partition(region)}:ecr:{region}:{account}:repository/{config.agent.image_repository}"
    return (
        f"{identity} may not read the agent images: {DESCRIBE_PERMISSION} on {arn} was denied, so the image "
        f"{config.agent.image_repository}:{tag} could not be checked and nothing was deployed. Fix: grant "
        f"{DESCRIBE_PERMISSION} on that repository to this identity (CI's deploy roles have it: redeploy Callsaver-CI)"
    )


def describe(found: ImageFound, source: str) -> str:
    """One line for the operator: which image the deploy will run, and where its tag came from."""
    digest = re.sub(r"^(sha256:[0-9a-f]{12}).*$", r"\1...", found.digest)
    return f"ok: {found.repository}:{found.tag} exists ({digest}, pushed {found.pushed_at}); tag from {source}"


def add_parser(commands: Any) -> None:
    """The `check-image` subcommand of `callsaver-infra`."""
    check = commands.add_parser(
        "check-image",
        help="before a deploy: check that the agent image it would run exists in the environment's ECR repository",
        description="Look the agent image up by tag (ECR DescribeImages) in the environment's account and region. "
        "The tag is --tag, else the one `cdk deploy --cdk-args` would deploy (an --app assembly's, a "
        "-c agentImageTag=, else config's agent.image_tag). Changes nothing. Exit 0 when the image exists, 1 when "
        "it (or the repository) does not (the most recent tags are listed), 2 on errors such as a denied "
        f"{DESCRIBE_PERMISSION}.",
    )
    check.add_argument("--env", required=True, help="environment name (a file under config/)")
    source = check.add_mutually_exclusive_group()
    source.add_argument("--tag", help="check this tag instead of config's agent.image_tag")
    source.add_argument(
        "--cdk-args",
        default="",
        metavar="ARGS",
        help="the arguments `make deploy` passes to cdk deploy (CDK_ARGS): check the tag they would deploy",
    )


def run(config: EnvironmentConfig, args: Any, client: Any) -> int:
    """Run `check-image`; `client(service)` makes a boto3 client in the environment's region. Returns the exit code."""
    import sys

    if args.tag is not None:
        tag, source = args.tag, "--tag"
    else:
        try:
            tag, source = tag_from_cdk_args(config, args.cdk_args)
        except (ImageCheckError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        found = check_image(config, tag, client("ecr"), client("sts"))
    except ImageMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ImageCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe(found, source))
    return 0
