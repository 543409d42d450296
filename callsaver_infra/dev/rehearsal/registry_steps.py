"""Rehearsal steps for the agent image: deploy Callsaver-Registry into the local endpoint, then show both outcomes
of the pre-deploy image check, refused while the configured tag is missing and passed once an image is pushed.

An image is pushed the way a registry receives one: PutImage with a Docker v2 manifest (no layers to upload; the
local endpoint stores manifests, it runs no containers).
"""

from __future__ import annotations

import json
import subprocess
import sys

from callsaver_infra.app.names import REGISTRY_STACK, RegistryOutputs
from callsaver_infra.app.registry_config import REGISTRY_CONFIG_FILE, REGISTRY_ENV_NAME, load_registry_config

# runner imports this module only inside Rehearsal.run(), so importing runner here is not circular.
from callsaver_infra.dev.rehearsal.runner import Checks, Rehearsal, StepFailed

# An image of the agent that the environment does not run: the refusal lists it among the tags that exist.
OLDER_TAG = "v0.9.0"


def manifest(seed: int) -> str:
    """A distinct Docker v2 image manifest (its config digest differs per seed)."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 1469,
                "digest": f"sha256:{seed:064x}",
            },
            "layers": [],
        }
    )


def deploy_registry(r: Rehearsal) -> str:
    """`cdk deploy Callsaver-Registry` of the assembly synthesized with `-c env=registry -c registryFor=<env>`, then
    check the repository's settings."""
    outputs_file = r.workdir / "registry-outputs.json"
    r._cdk(
        "deploy", REGISTRY_STACK, "--method=direct", "--require-approval=never", "-c", f"registryFor={r.config.name}",
        "--outputs-file", str(outputs_file), "--app", r.assembly("registry.out"),
        env=REGISTRY_ENV_NAME,
    )  # fmt: skip
    outputs = json.loads(outputs_file.read_text())[REGISTRY_STACK]
    c, ecr = Checks(), r._client("ecr")
    name = r.config.agent.image_repository
    c.expect("repository output", outputs.get(RegistryOutputs.REPOSITORY_NAME), name)
    (repository,) = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    c.expect("immutable tags", repository.get("imageTagMutability"), "IMMUTABLE")
    c.expect("scan on push", repository.get("imageScanningConfiguration"), {"scanOnPush": True})
    c.expect("encryption", repository.get("encryptionConfiguration"), {"encryptionType": "AES256"})
    rules = json.loads(ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"])["rules"]
    c.expect(
        "lifecycle",
        [(x["selection"]["tagStatus"], x["selection"]["countType"], x["selection"]["countNumber"]) for x in rules],
        [("untagged", "sinceImagePushed", 1), ("tagged", "imageCountMoreThan", _keep_tagged(r))],
    )
    c.raise_if_failed()
    return f"{c.passed} checks: {outputs.get(RegistryOutputs.REPOSITORY_URI)}"


def image_check_refuses(r: Rehearsal) -> str:
    """Push an older image, then the check must refuse config's tag (exit 1), naming it and the tag that exists."""
    r._client("ecr").put_image(
        repositoryName=r.config.agent.image_repository, imageManifest=manifest(1), imageTag=OLDER_TAG
    )
    result = _check_image(r)
    tag = r.config.agent.image_tag
    if result.returncode != 1 or f":{tag} is not in repository" not in result.stderr or OLDER_TAG not in result.stderr:
        raise StepFailed(f"expected a refusal (exit 1) naming {tag} and {OLDER_TAG}, got {result.returncode}:\n"
                          f"{result.stdout}{result.stderr}")  # fmt: skip
    return f"refused before deploy (exit 1): {tag[:12]}... missing; tags there: {OLDER_TAG}"


def push_agent_image(r: Rehearsal) -> str:
    """What the agent repository's CI does: push the image under the tag config names."""
    pushed = r._client("ecr").put_image(
        repositoryName=r.config.agent.image_repository, imageManifest=manifest(2), imageTag=r.config.agent.image_tag
    )["image"]["imageId"]
    return f"{r.config.agent.image_repository}:{r.config.agent.image_tag[:12]}... ({pushed['imageDigest'][:19]}...)"


def image_check_passes(r: Rehearsal) -> str:
    """The same check now finds the image (exit 0): the deploy may proceed."""
    result = _check_image(r)
    if result.returncode != 0:
        raise StepFailed(f"check-image exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result.stdout.strip().removeprefix("ok: ")


def _check_image(r: Rehearsal) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callsaver_infra.ops.cli", "check-image", "--env", r.config.name],
        cwd=r.root, env=r._env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _keep_tagged(r: Rehearsal) -> int:
    return load_registry_config(r.root / "config" / REGISTRY_CONFIG_FILE, {}).keep_tagged_images


def check_agent_image(r: Rehearsal) -> str:
    """After the deploy: the agent's task definition runs exactly the image the check found, from this registry."""
    from callsaver_infra.app.names import EnvNames

    names, agent = EnvNames(r.config.name), r.config.agent
    ecs = r._client("ecs")
    service = ecs.describe_services(cluster=names.agent_cluster, services=[names.agent_service])["services"][0]
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    expected = f"{r.config.account}.dkr.ecr.{r.config.region}.amazonaws.com/{agent.image_repository}:{agent.image_tag}"
    c = Checks()
    c.expect("task definition image", [d.get("image") for d in task["containerDefinitions"]], [expected])
    images = r._client("ecr").describe_images(
        repositoryName=agent.image_repository, imageIds=[{"imageTag": agent.image_tag}]
    )["imageDetails"]
    c.expect("the image is in the registry", len(images), 1)
    c.raise_if_failed()
    return f"{c.passed} checks: {names.agent_service} runs {agent.image_repository}:{agent.image_tag[:12]}..."
