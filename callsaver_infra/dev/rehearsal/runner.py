"""The local deploy rehearsal: the real CDK CLI deploys every stack of the `local` environment into a local AWS
endpoint (moto plus `moto_ext`), the deployed resources are checked with boto3 describe calls, the post-deploy hook
runs against a local LiveKit server, and everything is torn down. No AWS account, no Docker, no network.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from callsaver_infra.app.config import EnvironmentConfig, effective_qualifier
from callsaver_infra.app.names import (
    EGRESS_POLICY_NAME,
    HEALTHCHECK_PREFIX,
    RECORDING_METRICS_FILTER_ID,
    AgentEnvironment,
    EnvNames,
    IamOutputs,
    MonitoringOutputs,
    StorageOutputs,
)
from callsaver_infra.app.registry_config import REGISTRY_ENV_NAME
from callsaver_infra.app.secret_catalog import LIVEKIT_KEY_REF, LIVEKIT_SECRET_REF, PLACEHOLDER, SECRETS
from callsaver_infra.ops.push_egress import LOCAL_ACCOUNT

# moto's one built-in account: an environment rehearsed here must use it (and so can never be a real one).
MOTO_ACCOUNT = LOCAL_ACCOUNT
# Fake credentials for the local endpoint and the local LiveKit server; nothing real is ever involved.
FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal-not-a-secret"}
LIVEKIT_API_KEY = "APIrehearsal"
# Every service the steps call (built ahead, _warm_clients).
CLIENT_SERVICES = (
    "cloudformation", "iam", "secretsmanager", "s3", "kms", "ecr", "ecs", "ec2", "application-autoscaling", "logs",
    "sns", "sqs", "cloudwatch", "events", "sts",
)  # fmt: skip
# push-egress --verify's recording length here: the stand-in uploads the same file after 0.2 s as after 3 s, so the
# operator default's idle seconds would prove nothing more.
VERIFY_SECONDS = 0.2


T = TypeVar("T")


class StepFailed(Exception):
    """A rehearsal step failed; the message says what was wrong."""


@dataclass
class StepResult:
    """One step's outcome and wall time."""

    name: str
    seconds: float
    detail: str
    ok: bool = True


@dataclass
class Checks:
    """Collects named expectations and fails the step with every miss listed at once."""

    passed: int = 0
    failures: list[str] = field(default_factory=list)

    def expect(self, name: str, actual: Any, expected: Any) -> None:
        if actual == expected:
            self.passed += 1
        else:
            self.failures.append(f"{name}: expected {expected!r}, got {actual!r}")

    def raise_if_failed(self) -> None:
        if self.failures:
            raise StepFailed(f"{len(self.failures)} check(s) failed:\n    " + "\n    ".join(self.failures))


@dataclass
class Rehearsal:
    """Runs the steps in order and keeps their results; `run()` returns the process exit code."""

    config: EnvironmentConfig
    root: Path
    out: Callable[[str], None] = print
    results: list[StepResult] = field(default_factory=list)
    endpoint_url: str = ""
    workdir: Path = Path()
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    livekit: Any = None
    livekit_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    rule_id: str = ""
    alert_queue_url: str = ""
    _break_glass: dict[str, str] | None = field(default=None, repr=False)
    # The synth processes started before the endpoints (_start_synths), by the assembly directory they write.
    _synths: dict[str, subprocess.Popen[str]] = field(default_factory=dict, repr=False)
    _gaps: str = ""
    # Started in the background ahead of the step that checks them (_run_steps).
    _secrets_status: Background[subprocess.CompletedProcess[str]] | None = field(default=None, repr=False)
    _pushed: Background[subprocess.CompletedProcess[str]] | None = field(default=None, repr=False)
    _diff_policy: Background[dict[str, Any]] | None = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self) -> int:
        names = EnvNames(self.config.name)
        self.out(
            f"Rehearsing environment {self.config.name!r}: the pinned CDK CLI deploys into a local AWS endpoint "
            "(moto + callsaver extension) on 127.0.0.1, the hook pushes to a local LiveKit server."
        )
        started = time.perf_counter()
        code = self._run_in_workdir("callsaver-rehearsal-")
        if code:
            return code
        stacks = (names.storage_stack, names.iam_stack, names.secrets_stack, names.agent_stack, names.monitoring_stack)
        self.out(f"Stacks: {', '.join(stacks)}")
        self.out(f"Not emulated (set in the templates, not applied by the local endpoint): {self._gaps}")
        self.out(f"Rehearsal passed in {time.perf_counter() - started:.1f} s.")
        return 0

    def _run_in_workdir(self, prefix: str) -> int:
        """_run_steps in a fresh working directory, with the synths and the local endpoints around it."""
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            self.workdir = Path(tmp)
            # Synthesis needs no endpoint: it runs while the endpoints start and the bootstraps deploy.
            self._start_synths()
            try:
                with self._servers() as stop:
                    return self._run_steps(stop)
            finally:
                self._stop_synths()

    def _run_steps(self, stop: Callable[[], None]) -> int:
        from callsaver_infra.dev.rehearsal import registry_steps as image

        try:
            self._step("bootstrap", self._bootstrap)
            # The registry, and both outcomes of the pre-deploy image check (docs/testing.md).
            self._step("deploy registry", lambda: image.deploy_registry(self))
            self._step("image check refuses", lambda: image.image_check_refuses(self))
            self._step("push agent image", lambda: image.push_agent_image(self))
            self._step("image check passes", lambda: image.image_check_passes(self))
            # make deploy's two halves: the base stacks, a stop while secrets are placeholders, then the rest.
            self._step("deploy base stacks", self._deploy_base)
            # The access probes' diff role policy comes from aws-cdk-lib (jsii starts Node): built while the steps
            # up to the probes wait for their CLI processes, once both synths are done.
            self._diff_policy = Background(self._diff_role_policy)
            # Independent of the read-only checks below: `secrets status` runs meanwhile, its step checks it.
            self._secrets_status = Background(
                lambda: self._cli(*self._secrets_status_args, credentials=self._operator())
            )
            self._step("check storage", self._check_storage)
            self._step("check egress identity", self._check_iam)
            self._step("check secrets", self._check_secrets)
            self._step("first deploy stops", self._first_deploy_stops)
            self._step("set operator secrets", self._set_operator_secrets)
            self._step("deploy", self._deploy)
            # The hook touches LiveKit, the egress secret and the bucket, none of which the checks up to it read: it
            # runs meanwhile, and its step waits for it and checks what it did.
            self._pushed = Background(self._push_egress)
            self._step("check agent", self._check_agent)
            self._step("check agent image", lambda: image.check_agent_image(self))
            self._step("check monitoring", self._check_monitoring)
            self._step("alarm reaches topic", self._alarm_reaches_topic)
            self._step("rollback reaches topic", self._deploy_failure_reaches_topic)
            self._step("post-deploy hook", self._hook)
            self._step("inbound call recorded", self._inbound_call)
            self._step("status", self._status)
            # Last: the probes switch moto's IAM enforcement on and write a probe recording of their own.
            self._step("access probes", self._probe_access)
        except StepFailed:
            # What runs in the background ends before the endpoints stop under it.
            for started in (self._secrets_status, self._pushed):
                if started is not None:
                    with suppress(Exception):
                        started.result()
            stop()
            return 1
        self._gaps = self._not_emulated()
        self._step_teardown(stop)
        return 0

    # -- steps -------------------------------------------------------------------------------------------------

    @contextmanager
    def _servers(self) -> Iterator[Callable[[], None]]:
        """Start the local AWS endpoint and LiveKit server; yield a stop function that is safe to call twice."""
        started = time.perf_counter()
        import logging

        from moto.server import ThreadedMotoServer

        from callsaver_infra.dev.livekit_local import LocalLiveKitServer
        from callsaver_infra.dev.rehearsal import moto_ext

        # moto starts no containers: this makes a service report its desired tasks as running, as Fargate would
        # once healthy, so `status` can check running against desired.
        previous = os.environ.get("MOTO_ECS_SERVICE_RUNNING")
        os.environ["MOTO_ECS_SERVICE_RUNNING"] = "1"
        # werkzeug logs every request of the endpoint; the steps report what matters.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        aws = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        aws.start()
        host, port = aws.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        # A step that needs a client before it is built waits for it (the lock); an error surfaces there too.
        Background(self._warm_clients)
        self.livekit = LocalLiveKitServer(
            LIVEKIT_API_KEY, self.livekit_secret, s3_endpoint_url=self.endpoint_url
        ).start()
        self._record(
            "start local endpoints",
            started,
            f"AWS {self.endpoint_url} (moto {moto_ext.MOTO_VERSION}), LiveKit {self.livekit.url}",
        )
        stopped = False

        def stop() -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                self._stop_synths()
                livekit = Background(self.livekit.stop)
                stopping = Background(aws.stop)
                # werkzeug's serve_forever sees the shutdown at its next 0.5 s poll or connection: a connection
                # (closed unused) ends the wait sooner.
                while not stopping.done(0.02):
                    with suppress(OSError), socket.create_connection((host, port), timeout=1):
                        pass
                stopping.result()
                livekit.result()
                if previous is None:
                    os.environ.pop("MOTO_ECS_SERVICE_RUNNING", None)
                else:
                    os.environ["MOTO_ECS_SERVICE_RUNNING"] = previous

        try:
            yield stop
        finally:
            stop()

    def _start_synths(self) -> None:
        """Each assembly is synthesized once, from the start (synthesis is hermetic), and every later CLI run reads it
        with `--app` (as CI deploys with CDK_ARGS="--app cdk.out"): the environment's and the registry's (placed in
        the environment's account and region). Without the CLI the bootstrap step says so.

        Both start at once: the environment's synth is one process chain (CLI, app.py, jsii's Node) of about 4 CPU-s
        that the base deploy waits for; started later (after the registry's), it made that deploy wait longer."""
        if not (self.root / "node_modules" / ".bin" / "cdk").exists():
            return
        self._synths["cdk.out"] = self._start_synth("cdk.out", self.config.name)
        self._synths["registry.out"] = self._start_synth(
            "registry.out", REGISTRY_ENV_NAME, "-c", f"registryFor={self.config.name}"
        )

    def _stop_synths(self) -> None:
        for synth in self._synths.values():
            if synth.poll() is None:
                synth.kill()
            # With a timeout, communicate() is safe after assembly()'s and a second time.
            synth.communicate(timeout=60)

    def _bootstrap(self) -> str:
        """The account's default bootstrap (the registry stack is account-level) and, at the same time (two stacks of
        their own), the environment's, from the template `callsaver-infra bootstrap` generates: the environment's
        stacks then deploy through it."""
        toolkit = Background(self._bootstrap_toolkit)
        try:
            own = self._bootstrap_environment()
        finally:
            toolkit.result()
        return f"CDKToolkit, {own}; the environment's and the registry's assemblies synthesized meanwhile"

    def _bootstrap_environment(self) -> str:
        """The environment's own bootstrap, from the template `callsaver-infra bootstrap` generates (its stacks then
        deploy through it), checked: no AdministratorAccess, the environment's policy, the permissions boundary."""
        from callsaver_infra.app import bootstrap
        from callsaver_infra.ops.bootstrap import bootstrap_command, write_template

        template = write_template(self.config, self.workdir / "bootstrap", self.root / bootstrap.CLI_TEMPLATE)
        _, _, *args = bootstrap_command(self.config, template)
        self._cdk("bootstrap", *args, cwd=self.workdir)
        c, iam = Checks(), self._client("iam")
        execution = bootstrap.bootstrap_role_name(self.config, "cfn-exec")
        c.expect(
            "execution role has no managed policy (no AdministratorAccess)",
            iam.list_attached_role_policies(RoleName=execution)["AttachedPolicies"],
            [],
        )
        document: Any = iam.get_role_policy(RoleName=execution, PolicyName=f"callsaver-{self.config.name}-only")[
            "PolicyDocument"
        ]
        if isinstance(document, str):
            # moto keeps a policy CloudFormation created as the repr of its dict, not JSON.
            import ast

            document = ast.literal_eval(document)
        c.expect("execution role's policy is the environment's", document, bootstrap.execution_policy(self.config))
        boundary = iam.get_policy(PolicyArn=bootstrap.permissions_boundary_arn(self.config))["Policy"]
        c.expect(
            "permissions boundary exists", boundary["PolicyName"], bootstrap.permissions_boundary_name(self.config)
        )
        c.raise_if_failed()
        return f"{bootstrap.toolkit_stack_name(self.config)} (qualifier {self.config.bootstrap.qualifier})"

    def _bootstrap_toolkit(self) -> str:
        # Run outside the repository (no cdk.json): with an app, `cdk bootstrap` synthesizes it only to list the
        # environments, and the environment is given here.
        self._cdk("bootstrap", f"aws://{self.config.account}/{self.config.region}", cwd=self.workdir)
        return "CDKToolkit"

    def _start_synth(self, outdir: str, env: str, *args: str) -> subprocess.Popen[str]:
        cdk = self.root / "node_modules" / ".bin" / "cdk"
        if not cdk.exists():
            raise StepFailed(f"{cdk} is missing: run `make setup` first")
        return subprocess.Popen(
            [str(cdk), "synth", "-q", "-c", f"env={env}", *args, "-o", str(self.workdir / outdir)],
            cwd=self.root, env=self._env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def assembly(self, outdir: str) -> str:
        """The directory of an assembly `_start_synths` started synthesizing, once that synth has passed."""
        synth = self._synths[outdir]
        output, _ = synth.communicate(timeout=600)
        if synth.returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-25:])
            raise StepFailed(f"synth of {outdir} exited {synth.returncode}:\n{tail}")
        return str(self.workdir / outdir)

    def _deploy_base(self) -> str:
        names = EnvNames(self.config.name)
        base = (names.storage_stack, names.iam_stack, names.secrets_stack)
        deployed = self._deploy(*base)
        # Through the environment's own bootstrap: CloudFormation acts as its execution role, not the default one.
        from callsaver_infra.app import bootstrap

        c, cfn = Checks(), self._client("cloudformation")
        execution = f"arn:aws:iam::{self.config.account}:role/{bootstrap.bootstrap_role_name(self.config, 'cfn-exec')}"
        for stack in base:
            c.expect(
                f"{stack} deployed as", cfn.describe_stacks(StackName=stack)["Stacks"][0].get("RoleARN"), execution
            )
        c.raise_if_failed()
        return f"{deployed} (as {bootstrap.bootstrap_role_name(self.config, 'cfn-exec')})"

    def _deploy(self, *stacks: str) -> str:
        outputs_file = self.workdir / "outputs.json"
        # --method=direct: moto's change-set execution yields no stack Outputs, which the hook needs.
        self._cdk(
            "deploy", *(stacks or ("--all",)), "--method=direct", "--require-approval=never",
            "--outputs-file", str(outputs_file), "--app", self.assembly("cdk.out"),
        )  # fmt: skip
        self.outputs = json.loads(outputs_file.read_text())
        if stacks:
            return ", ".join(stacks)
        deployed = sorted(
            p.name.removesuffix(".template.json") for p in (self.workdir / "cdk.out").glob("*.template.json")
        )
        return ", ".join(deployed)

    def _check_storage(self) -> str:
        c, s3 = Checks(), self._client("s3")
        bucket = self.config.storage.bucket_name
        c.expect(
            "bucket name output",
            self._output(EnvNames(self.config.name).storage_stack, StorageOutputs.BUCKET_NAME),
            bucket,
        )
        rules = [
            r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] if r["ID"] == "ExpireRecordings"
        ]
        c.expect(
            "noncurrent versions expire after a day",
            [r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") for r in rules],
            [1],
        )
        c.expect("versioning", s3.get_bucket_versioning(Bucket=bucket).get("Status"), "Enabled")
        c.expect(
            "lifecycle expiration days",
            [r.get("Expiration", {}).get("Days") for r in rules],
            [self.config.storage.expiration_days],
        )
        c.expect(
            "lifecycle abort incomplete uploads",
            [r.get("AbortIncompleteMultipartUpload") for r in rules],
            [{"DaysAfterInitiation": 1}],
        )
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        c.expect(
            "public access block",
            sorted(k for k, v in block.items() if v),
            sorted(["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"]),
        )
        sse = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        c.expect("encryption", sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], "aws:kms")
        c.expect("bucket key", sse.get("BucketKeyEnabled"), True)
        key_arn = self._output(EnvNames(self.config.name).storage_stack, StorageOutputs.KEY_ARN)
        c.expect(
            "encrypted with the stack's key", sse["ApplyServerSideEncryptionByDefault"].get("KMSMasterKeyID"), key_arn
        )
        kms = self._client("kms")
        c.expect("key rotation", kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"], True)
        c.expect(
            "key alias",
            kms.describe_key(KeyId=EnvNames(self.config.name).session_key_alias)["KeyMetadata"]["Arn"],
            key_arn,
        )
        ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"][0]["ObjectOwnership"]
        c.expect("object ownership", ownership, "BucketOwnerEnforced")
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        tls = [s for s in policy["Statement"] if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
        c.expect("TLS-only policy denies", [s["Effect"] for s in tls], ["Deny"])
        lookup = [s for s in policy["Statement"] if s.get("Sid") == "DenyCdkLookupRoles"]
        c.expect("CDK lookup roles may not list or read recordings", [s["Effect"] for s in lookup], ["Deny"])
        metrics = s3.get_bucket_metrics_configuration(Bucket=bucket, Id=RECORDING_METRICS_FILTER_ID)
        prefix = self.config.call_recording.recording_prefix
        c.expect(
            "request metrics of the recordings",
            metrics["MetricsConfiguration"].get("Filter", {}).get("Prefix", ""),
            prefix,
        )
        c.raise_if_failed()
        return f"{c.passed} checks: s3://{bucket}"

    def _check_iam(self) -> str:
        c, iam, sm = Checks(), self._client("iam"), self._client("secretsmanager")
        names = EnvNames(self.config.name)
        document = iam.get_user_policy(UserName=names.egress_user, PolicyName=EGRESS_POLICY_NAME)["PolicyDocument"]
        if isinstance(document, str):
            document = json.loads(document)
        statements = document["Statement"]
        c.expect(
            "egress policy actions",
            sorted(a for s in statements for a in _list(s["Action"])),
            ["kms:Decrypt", "kms:GenerateDataKey", "s3:AbortMultipartUpload", "s3:PutObject"],
        )
        c.expect(
            "egress policy resources",
            [r for s in statements for r in _list(s["Resource"])],
            [
                f"arn:aws:s3:::{self.config.storage.bucket_name}/*",
                f"arn:aws:kms:{self.config.region}:{self.config.account}:key/*",
            ],
        )
        c.expect(
            "egress key grant names the sessions key by alias",
            [
                s.get("Condition", {}).get("ForAnyValue:StringEquals")
                for s in statements
                if s["Sid"] == "EncryptRecordings"
            ],
            [{"kms:ResourceAliases": names.session_key_alias}],
        )
        keys = iam.list_access_keys(UserName=names.egress_user)["AccessKeyMetadata"]
        key_id = self._output(names.iam_stack, IamOutputs.ACCESS_KEY_ID)
        c.expect(
            "one active access key, the one in the outputs",
            [(k["AccessKeyId"], k["Status"]) for k in keys],
            [(key_id, "Active")],
        )
        secret_arn = self._output(names.iam_stack, IamOutputs.CREDENTIALS_SECRET_ARN)
        stored = json.loads(sm.get_secret_value(SecretId=secret_arn)["SecretString"])
        c.expect("key secret holds the key id", stored.get("accessKeyId"), key_id)
        c.expect("key secret holds a secret access key", bool(stored.get("secretAccessKey")), True)
        c.raise_if_failed()
        return f"{c.passed} checks: user {names.egress_user}, key ...{key_id[-4:]}"

    def _check_secrets(self) -> str:
        c, sm = Checks(), self._client("secretsmanager")
        names = EnvNames(self.config.name)
        for spec in SECRETS:
            value = sm.get_secret_value(SecretId=names.secret(spec.ref))["SecretString"]
            expected = spec.from_config(self.config) if spec.from_config else PLACEHOLDER
            # Compare without ever showing an operator-owned value.
            c.expect(
                f"{spec.ref} is {'the config value' if spec.from_config else 'the placeholder'}",
                value == expected,
                True,
            )
        c.raise_if_failed()
        return f"{c.passed} secrets under callsaver/{self.config.name}/"

    def _check_agent(self) -> str:
        c, ecs, ec2 = Checks(), self._client("ecs"), self._client("ec2")
        aas, logs = self._client("application-autoscaling"), self._client("logs")
        names, agent = EnvNames(self.config.name), self.config.agent
        service = ecs.describe_services(cluster=names.agent_cluster, services=[names.agent_service])["services"][0]
        task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        c.expect("task cpu/memory", (task.get("cpu"), task.get("memory")), (str(agent.cpu), str(agent.memory_mib)))
        c.expect("task network mode", task.get("networkMode"), "awsvpc")
        c.expect("task compatibilities", task.get("requiresCompatibilities"), ["FARGATE"])
        c.expect(
            "task has execution and task roles",
            (bool(task.get("executionRoleArn")), bool(task.get("taskRoleArn"))),
            (True, True),
        )
        container = task["containerDefinitions"][0]
        c.expect("container stop timeout", container.get("stopTimeout"), 120)
        c.expect(
            "container health check", "8081" in " ".join(container.get("healthCheck", {}).get("command", [])), True
        )
        injected = sorted(s["name"] for s in container.get("secrets", []))
        expected = sorted([s.key for s in SECRETS if s.for_agent] + [
            AgentEnvironment.RECORDING_ACCESS_KEY_ID, AgentEnvironment.RECORDING_SECRET_ACCESS_KEY
        ])  # fmt: skip
        c.expect("container secrets (catalog + the egress key pair)", injected, expected)
        c.expect("service launch type", service.get("launchType"), "FARGATE")
        c.expect("service desired count", service.get("desiredCount"), agent.min_tasks)
        deployment = service.get("deploymentConfiguration", {})
        c.expect(
            "deploy keeps capacity",
            (deployment.get("minimumHealthyPercent"), deployment.get("maximumPercent")),
            (100, 200),
        )
        c.expect(
            "deploy circuit breaker", deployment.get("deploymentCircuitBreaker"), {"enable": True, "rollback": True}
        )
        network = service.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
        c.expect("tasks get public IPs", network.get("assignPublicIp"), "ENABLED")
        subnets = ec2.describe_subnets(SubnetIds=network.get("subnets", []))["Subnets"]
        c.expect(
            "two subnets in two AZs of the region",
            sorted({s["AvailabilityZone"][:-1] for s in subnets}) + [len({s["AvailabilityZone"] for s in subnets})],
            [self.config.region, 2],
        )
        groups = ec2.describe_security_groups(GroupIds=network.get("securityGroups", []))["SecurityGroups"]
        c.expect("security group has no ingress", [g["IpPermissions"] for g in groups], [[]])
        target_id = f"service/{names.agent_cluster}/{names.agent_service}"
        targets = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[target_id])["ScalableTargets"]
        c.expect(
            "autoscaling bounds",
            [(t["MinCapacity"], t["MaxCapacity"]) for t in targets],
            [(agent.min_tasks, agent.max_tasks)],
        )
        policies = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=target_id)["ScalingPolicies"]
        tracking = [p["TargetTrackingScalingPolicyConfiguration"] for p in policies]
        c.expect(
            "CPU target",
            [(t["TargetValue"], t["PredefinedMetricSpecification"]["PredefinedMetricType"]) for t in tracking],
            [(agent.cpu_target_percent, "ECSServiceAverageCPUUtilization")],
        )
        c.expect("scales out faster than in", [t["ScaleOutCooldown"] < t["ScaleInCooldown"] for t in tracking], [True])
        groups_found = logs.describe_log_groups(logGroupNamePrefix=names.agent_log_group)["logGroups"]
        c.expect("log group retention", [g.get("retentionInDays") for g in groups_found], [agent.log_retention_days])
        c.raise_if_failed()
        return f"{c.passed} checks: {names.agent_service} in {names.agent_cluster}"

    def _check_monitoring(self) -> str:
        c, sns, cw = Checks(), self._client("sns"), self._client("cloudwatch")
        events, kms = self._client("events"), self._client("kms")
        names, monitoring = EnvNames(self.config.name), self.config.monitoring
        topic_arn = self._output(names.monitoring_stack, MonitoringOutputs.TOPIC_ARN)
        c.expect("topic name", topic_arn.rsplit(":", 1)[-1], names.alert_topic)
        attributes = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]
        key = kms.describe_key(KeyId=names.alert_key_alias)["KeyMetadata"]
        c.expect("topic encrypted with its own key", attributes.get("KmsMasterKeyId"), key["Arn"])
        c.expect("key rotation", kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"], True)
        policy = json.loads(attributes.get("Policy", "{}"))
        c.expect(
            "publishers allowed by the topic policy",
            sorted(s["Principal"]["Service"] for s in policy.get("Statement", []) if s["Effect"] == "Allow"),
            ["cloudwatch.amazonaws.com", "events.amazonaws.com"],
        )
        expected = [names.alarm_agent_down, names.alarm_agent_saturated, names.alarm_uploads_failing]
        if monitoring.max_hours_without_recording is not None:
            expected.append(names.alarm_no_recording)
        alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=list(names.alarms))["MetricAlarms"]}
        c.expect("alarms", sorted(alarms), sorted(expected))
        c.expect(
            "every alarm notifies the topic when it fires and clears",
            {n: (a["AlarmActions"], a["OKActions"]) for n, a in alarms.items()},
            {n: ([topic_arn], [topic_arn]) for n in expected},
        )
        down = alarms.get(names.alarm_agent_down, {})
        c.expect(
            "agent-down alarm",
            (
                down.get("MetricName"),
                down.get("Threshold"),
                down.get("EvaluationPeriods"),
                down.get("TreatMissingData"),
            ),
            ("RunningTaskCount", float(self.config.agent.min_tasks), monitoring.agent_down_minutes, "breaching"),
        )
        rule = events.describe_rule(Name=names.deploy_failed_rule)
        pattern = json.loads(rule["EventPattern"])
        c.expect("deploy rule pattern", (pattern["detail-type"], pattern["detail"]), (
            ["ECS Deployment State Change"], {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]}
        ))  # fmt: skip
        c.expect("deploy rule matches the agent service", pattern["resources"][0].endswith(
            f":service/{names.agent_cluster}/{names.agent_service}"
        ), True)  # fmt: skip
        rule_targets = events.list_targets_by_rule(Rule=names.deploy_failed_rule)["Targets"]
        c.expect("deploy rule targets the topic", [t["Arn"] for t in rule_targets], [topic_arn])
        c.expect(
            "deploy message names the deployment",
            all("$.detail.deploymentId" in t.get("InputTransformer", {}).get("InputPathsMap", {}).values()
                for t in rule_targets),
            True,
        )  # fmt: skip
        dashboard = cw.get_dashboard(DashboardName=names.dashboard)
        c.expect("dashboard widgets", len(json.loads(dashboard["DashboardBody"])["widgets"]), 6)
        c.raise_if_failed()
        return f"{c.passed} checks: topic {names.alert_topic}, {len(alarms)} alarms, rule, dashboard {names.dashboard}"

    def _alarm_reaches_topic(self) -> str:
        """Subscribe a queue to the alert topic, flip the agent-down alarm, and read CloudWatch's notification."""
        c, sns, sqs, cw = Checks(), self._client("sns"), self._client("sqs"), self._client("cloudwatch")
        names = EnvNames(self.config.name)
        topic_arn = self._output(names.monitoring_stack, MonitoringOutputs.TOPIC_ARN)
        queue_url = self.alert_queue_url = sqs.create_queue(QueueName=f"{names.alert_topic}-rehearsal")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
        received = []
        for state in ("ALARM", "OK"):
            cw.set_alarm_state(
                AlarmName=names.alarm_agent_down, StateValue=state, StateReason=f"rehearsal: test {state} notification"
            )
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
            received += [json.loads(m["Body"]) for m in messages.get("Messages", [])]
        c.expect(
            "notifications on the topic",
            [(m.get("AlarmName"), m.get("NewStateValue")) for m in received],
            [(names.alarm_agent_down, "ALARM"), (names.alarm_agent_down, "OK")],
        )
        c.expect(
            "notification says what to check first",
            all(f"callsaver-infra status --env {self.config.name}" in m.get("AlarmDescription", "") for m in received),
            True,
        )
        c.raise_if_failed()
        return f"{c.passed} checks: {names.alarm_agent_down} ALARM and OK reached {names.alert_topic} (via SQS)"

    def _deploy_failure_reaches_topic(self) -> str:
        """Send the events ECS sends when a deployment fails and when one completes (in AWS only ECS may use the
        aws.ecs source; moto accepts it) and read, from the queue, the one message the rule sends."""
        c, events, sqs, ecs = Checks(), self._client("events"), self._client("sqs"), self._client("ecs")
        names = EnvNames(self.config.name)
        service = ecs.describe_services(cluster=names.agent_cluster, services=[names.agent_service])["services"][0]
        deployment = "ecs-svc/1234567890123456789"
        for name, reason in (
            ("SERVICE_DEPLOYMENT_COMPLETED", "ECS deployment ecs-svc/1 completed."),
            ("SERVICE_DEPLOYMENT_FAILED", "ECS deployment circuit breaker: tasks failed to start."),
        ):
            detail = {"eventType": "INFO" if "COMPLETED" in name else "ERROR", "eventName": name,
                      "deploymentId": deployment, "updatedAt": "2026-01-01T00:00:00Z", "reason": reason}  # fmt: skip
            entry = {"Source": "aws.ecs", "DetailType": "ECS Deployment State Change",
                     "Resources": [service["serviceArn"]], "Detail": json.dumps(detail)}  # fmt: skip
            c.expect(f"{name} event accepted", events.put_events(Entries=[entry])["FailedEntryCount"], 0)
        messages = sqs.receive_message(QueueUrl=self.alert_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2)
        bodies = [m["Body"] for m in messages.get("Messages", [])]
        c.expect("one message, for the failed deployment only", len(bodies), 1)
        text = bodies[0] if bodies else ""
        c.expect("message names the deployment", deployment in text, True)
        c.expect("message names the service", service["serviceArn"] in text, True)
        c.expect("message gives the reason", "circuit breaker" in text, True)
        c.raise_if_failed()
        return f"{c.passed} checks: {names.deploy_failed_rule} sent deployment {deployment}'s failure to the topic"

    def _first_deploy_stops(self) -> str:
        """`make deploy` runs `secrets status` between its halves: with placeholders it must stop (exit 1)."""
        names = EnvNames(self.config.name)
        assert self._secrets_status is not None, "started after the base stacks' deploy"
        result = self._secrets_status.result()
        c = Checks()
        c.expect("secrets status exits 1 while secrets are placeholders", result.returncode, 1)
        c.expect("it prints the command for each", "callsaver-infra secrets set --env" in result.stdout, True)
        stacks = {s["StackName"] for s in self._client("cloudformation").describe_stacks()["Stacks"]}
        c.expect("the agent stack is not deployed yet", names.agent_stack in stacks, False)
        c.raise_if_failed()
        return f"{c.passed} checks: make deploy stops before {names.agent_stack}"

    def _set_operator_secrets(self) -> str:
        """The operator's step after a first deploy: every operator secret set (fake values; the real LiveKit pair
        of the local server)."""
        from callsaver_infra.ops.secrets_admin import set_secret

        sm = self._client("secretsmanager")
        real = {LIVEKIT_KEY_REF: LIVEKIT_API_KEY, LIVEKIT_SECRET_REF: self.livekit_secret}
        operator = [spec for spec in SECRETS if not spec.owned_by_stack]
        for spec in operator:
            set_secret(sm, self.config, spec, real.get(spec.ref, f"rehearsal-fake-{spec.key.lower()}"))
        result = self._cli(*self._secrets_status_args, credentials=self._operator())
        if result.returncode != 0:
            raise StepFailed(f"secrets status still exits {result.returncode}:\n{result.stdout}{result.stderr}")
        return f"{len(operator)} secrets set; secrets status exits 0"

    @property
    def _secrets_status_args(self) -> tuple[str, ...]:
        return ("secrets", "status", "--env", self.config.name)

    def _push_egress(self) -> subprocess.CompletedProcess[str]:
        """What `make deploy` runs after the deploy: push-egress --verify, against the inbound rule of the
        environment's agent (created in the dashboard, here in the stand-in)."""
        from livekit.protocol import agent_dispatch as proto_dispatch
        from livekit.protocol import room as proto_room
        from livekit.protocol import sip as proto_sip

        hook = self.config.call_recording
        if not hook.auto_egress:
            raise StepFailed(f"config/{self.config.name}.toml: call_recording.auto_egress is off; nothing to rehearse")
        # The project's inbound trunk (Twilio) and the environment's inbound rule, both created in the dashboard;
        # the rule is found by the agent it dispatches, not by id.
        self.livekit.add_inbound_trunk(proto_sip.SIPInboundTrunkInfo(name="rehearsal trunk", numbers=["+15550100002"]))
        rule_id = self.livekit.add_dispatch_rule(
            proto_sip.SIPDispatchRuleInfo(
                name="rehearsal inbound calls",
                rule=proto_sip.SIPDispatchRule(
                    dispatch_rule_individual=proto_sip.SIPDispatchRuleIndividual(room_prefix="call")
                ),
                room_config=proto_room.RoomConfiguration(
                    agents=[proto_dispatch.RoomAgentDispatch(agent_name=self.config.livekit.worker_name)]
                ),
            )
        )
        self.rule_id = rule_id
        outputs_file = self.workdir / "outputs.json"
        cli = [sys.executable, "-m", "callsaver_infra.ops.cli", "push-egress", "--env", self.config.name,
               "--outputs-file", str(outputs_file), "--livekit-url", self.livekit.url,
               "--s3-endpoint-url", self.endpoint_url, "--verify",
               "--verify-seconds", f"{VERIFY_SECONDS:g}"]  # fmt: skip
        with subprocess.Popen(
            cli, cwd=self.root, env=self._env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as process:
            # The inbound call's hang-up uses LiveKit's API client: imported while the hook runs, not in that step.
            import livekit.api  # noqa: F401

            try:
                stdout, stderr = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        return subprocess.CompletedProcess(cli, process.returncode, stdout, stderr)

    def _hook(self) -> str:
        assert self._pushed is not None, "started after the deploy"
        result = self._pushed.result()
        rule_id, sm = self.rule_id, self._client("secretsmanager")
        if result.returncode != 0:
            raise StepFailed(f"push-egress exited {result.returncode}:\n{result.stdout}{result.stderr}")
        c = Checks()
        names = EnvNames(self.config.name)
        with self.livekit.lock:
            rule = self.livekit.dispatch_rules[rule_id]
        room = rule.room_config.egress.room
        upload = room.file_outputs[0].s3 if room.file_outputs else None
        key_id = self._output(names.iam_stack, IamOutputs.ACCESS_KEY_ID)
        stored = json.loads(
            sm.get_secret_value(SecretId=self._output(names.iam_stack, IamOutputs.CREDENTIALS_SECRET_ARN))[
                "SecretString"
            ]
        )
        c.expect("dispatch rule egress bucket", upload.bucket if upload else None, self.config.storage.bucket_name)
        c.expect("dispatch rule egress region", upload.region if upload else None, self.config.region)
        c.expect("dispatch rule egress access key", upload.access_key if upload else None, key_id)
        c.expect(
            "dispatch rule egress secret matches the key secret",
            (upload.secret if upload else None) == stored["secretAccessKey"],
            True,
        )
        c.expect("dispatch rule keeps its name", rule.name, "rehearsal inbound calls")
        listed = self._client("s3").list_objects_v2(Bucket=self.config.storage.bucket_name, Prefix=HEALTHCHECK_PREFIX)
        c.expect("verify wrote a health-check recording", listed.get("KeyCount", 0) >= 1, True)
        c.expect("verify used a web egress", "(web egress, audio only)" in result.stdout, True)
        c.raise_if_failed()
        bucket = self.config.storage.bucket_name
        return f"{c.passed} checks: rule {rule_id} (found by agent name) records to s3://{bucket}, key ...{key_id[-4:]}"

    def _inbound_call(self) -> str:
        """A call through the rule: LiveKit creates the room with the rule's room config, the caller publishes, the
        automatic egress records; hanging up (the room closes) uploads the recording into the bucket."""
        room, egress_id = self.livekit.simulate_inbound_call(self.rule_id)
        if egress_id is None:
            raise StepFailed(f"a call through {self.rule_id} started no recording")
        from livekit.protocol import egress as proto_egress

        deadline = time.monotonic() + 10  # the caller talks until the recording runs, then hangs up
        while time.monotonic() < deadline:
            with self.livekit.lock:
                if self.livekit.egresses[egress_id].status == proto_egress.EgressStatus.EGRESS_ACTIVE:
                    break
            time.sleep(0.02)
        self._livekit_call(lambda lk: lk.room.delete_room(_delete_room_request(room)))
        info = self.livekit.wait_for_egress(egress_id, timeout=10)
        status = proto_egress.EgressStatus.Name(info.status)
        if status != "EGRESS_COMPLETE":
            raise StepFailed(f"the call's recording ended {status}: {info.error}")
        key = info.file_results[0].filename
        head = self._client("s3").head_object(Bucket=self.config.storage.bucket_name, Key=key)
        return f"s3://{self.config.storage.bucket_name}/{key} ({head['ContentLength']} bytes)"

    def _status(self) -> str:
        """`callsaver-infra status` against the rehearsal's endpoints, run as the break-glass role (status reads
        secret values): every line of the whole chain ok."""
        result = self._cli(
            "status", "--env", self.config.name, "--outputs-file", str(self.workdir / "outputs.json"),
            "--livekit-url", self.livekit.url, "--s3-endpoint-url", self.endpoint_url, credentials=self._operator(),
        )  # fmt: skip
        if result.returncode != 0:
            raise StepFailed(f"status exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return f"as the break-glass role: {result.stdout.strip().splitlines()[-1]}"

    def _probe_access(self) -> str:
        """With moto's IAM enforcement on: the RecordingReader role reads a recording, the egress key still writes
        one in parts, and a role with exactly the CI diff role's policy runs `cdk diff` but cannot list the bucket.
        The diff role's GitHub OIDC federation is stood in for by an IAM user that may assume it."""
        from botocore.exceptions import ClientError

        from callsaver_infra.app.names import CiNames

        names, bucket = EnvNames(self.config.name), self.config.storage.bucket_name
        account, region = self.config.account, self.config.region
        iam, sm = self._client("iam"), self._client("secretsmanager")
        egress = json.loads(
            sm.get_secret_value(SecretId=self._output(names.iam_stack, IamOutputs.CREDENTIALS_SECRET_ARN))[
                "SecretString"
            ]
        )
        reader_role = self._output(names.storage_stack, StorageOutputs.READER_ROLE_ARN)
        diff_policy = (self._diff_policy or Background(self._diff_role_policy)).result()
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "sts:AssumeRole"}
        ]}  # fmt: skip
        diff_role = iam.create_role(RoleName=CiNames.DIFF_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
        iam.put_role_policy(
            RoleName=CiNames.DIFF_ROLE, PolicyName="ReadDeployedTemplates", PolicyDocument=json.dumps(diff_policy)
        )
        callers = {}
        for user, role_arn in (("probe-github-oidc", diff_role["Role"]["Arn"]), ("probe-backend", reader_role)):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="AssumeOne", PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}],
            }))  # fmt: skip
            key = iam.create_access_key(UserName=user)["AccessKey"]
            callers[user] = (key["AccessKeyId"], key["SecretAccessKey"], role_arn)

        def client(service: str, key_id: str, secret: str, token: str | None = None) -> Any:
            import boto3

            return boto3.client(
                service, region_name=region, endpoint_url=self.endpoint_url, aws_access_key_id=key_id,
                aws_secret_access_key=secret, aws_session_token=token,
            )  # fmt: skip

        def assume(user: str) -> dict[str, str]:
            key_id, secret, role_arn = callers[user]
            return dict(
                client("sts", key_id, secret).assume_role(RoleArn=role_arn, RoleSessionName=user)["Credentials"]
            )

        def error(call: Callable[[], Any]) -> str:
            try:
                call()
            except ClientError as e:
                return str(e.response["Error"]["Code"])
            return "allowed"

        c = Checks()
        self._enforce_iam(True)
        diff: Background[subprocess.CompletedProcess[str]] | None = None
        try:
            c.expect("enforcement on: the unprivileged caller is refused", error(
                lambda: self._client("s3").list_objects_v2(Bucket=bucket)
            ) != "allowed", True)  # fmt: skip
            differ_creds = assume("probe-github-oidc")
            # The diff role's `cdk diff` (a CLI process, most of this step) runs beside the S3 probes: it reads only
            # the stacks' templates, which they do not touch.
            diff = Background(lambda: self._run_cdk(
                ["diff", "--method=template", "--no-color", "--app", self.assembly("cdk.out")],
                {"AWS_ACCESS_KEY_ID": differ_creds["AccessKeyId"],
                 "AWS_SECRET_ACCESS_KEY": differ_creds["SecretAccessKey"],
                 "AWS_SESSION_TOKEN": differ_creds["SessionToken"]},
            ))  # fmt: skip
            writer = client("s3", egress["accessKeyId"], egress["secretAccessKey"])
            key = "probe/call-_+15550100_probe/recording.ogg"
            upload = writer.create_multipart_upload(Bucket=bucket, Key=key, ContentType="audio/ogg")["UploadId"]
            part = writer.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"OggS" * 64)
            writer.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
            )  # fmt: skip
            c.expect("egress key writes a multipart recording", True, True)
            c.expect(
                "egress key cannot read it", error(lambda: writer.get_object(Bucket=bucket, Key=key)), "AccessDenied"
            )
            creds = assume("probe-backend")
            reader = client("s3", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
            body = reader.get_object(Bucket=bucket, Key=key)["Body"].read()
            c.expect("RecordingReader reads the recording", body, b"OggS" * 64)
            c.expect(
                "RecordingReader cannot list", error(lambda: reader.list_objects_v2(Bucket=bucket)), "AccessDenied"
            )
            creds = differ_creds
            differ = client("s3", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
            c.expect(
                "diff role cannot list the bucket", error(lambda: differ.list_objects_v2(Bucket=bucket)), "AccessDenied"
            )
            c.expect(
                "diff role cannot read a recording",
                error(lambda: differ.get_object(Bucket=bucket, Key=key)),
                "AccessDenied",
            )
            diffed = diff.result()
            output = diffed.stdout + diffed.stderr
            c.expect("diff role runs cdk diff --method=template", diffed.returncode, 0)
            c.expect("cdk diff compared the deployed stacks", all(s in output for s in names.stacks), True)
            if diffed.returncode != 0:
                c.failures.append("cdk diff output:\n" + "\n".join(output.strip().splitlines()[-20:]))
        finally:
            # Enforcement goes off only once the diff has ended (a probe that failed may leave it running).
            if diff is not None:
                with suppress(Exception):
                    diff.result()
            self._enforce_iam(False)
        c.raise_if_failed()
        return f"{c.passed} checks with IAM enforcement: reader reads, egress writes in parts, diff role diffs only"

    def _diff_role_policy(self) -> dict[str, Any]:
        """Exactly the CI diff role's policy for the environment's stacks (github_oidc.diff_statements)."""
        from callsaver_infra.app.constructs.github_oidc import DeployedStack, diff_statements

        names, account, region = EnvNames(self.config.name), self.config.account, self.config.region
        return {"Version": "2012-10-17", "Statement": diff_statements(
            [DeployedStack(stack, account, region, effective_qualifier(self.config)) for stack in names.stacks]
        )}  # fmt: skip

    # -- helpers -----------------------------------------------------------------------------------------------

    def _cli(self, *args: str, credentials: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "callsaver_infra.ops.cli", *args],
            cwd=self.root, env={**self._env(), **(credentials or {})}, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    def _operator(self) -> dict[str, str]:
        """Credentials of the environment's break-glass role, the only operator identity the secrets' resource
        policies let read a secret (docs/security.md): `secrets status` and `status` read secret values. The role
        belongs to the account, not to the app, so the rehearsal creates it as config names it. moto does not
        evaluate secret resource policies, so this shows the operator's path, not the Deny for everyone else
        (tests/test_secrets_stack.py evaluates the policy)."""
        arn = self.config.security.break_glass_role_arn
        if arn is None:
            raise StepFailed(f"config/{self.config.name}.toml: [security] break_glass_role_arn is not set")
        if self._break_glass is None:
            iam, name = self._client("iam"), arn.rsplit("/", 1)[1]
            trust = {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{self.config.account}:root"},
                 "Action": "sts:AssumeRole"}
            ]}  # fmt: skip
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
            creds = self._client("sts").assume_role(RoleArn=arn, RoleSessionName="rehearsal-operator")["Credentials"]
            self._break_glass = {
                "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                "AWS_SESSION_TOKEN": creds["SessionToken"],
            }
            import boto3

            with self._clients_lock:  # boto3's default session builds one client at a time
                sts = boto3.client(
                    "sts", region_name=self.config.region, endpoint_url=self.endpoint_url,
                    aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                    aws_session_token=creds["SessionToken"],
                )  # fmt: skip
            caller = sts.get_caller_identity()["Arn"]
            expected = f"arn:aws:sts::{self.config.account}:assumed-role/{name}/rehearsal-operator"
            if caller != expected:
                raise StepFailed(f"the break-glass credentials are {caller}, expected {expected}")
        return self._break_glass

    def _livekit_call(self, fn: Callable[[Any], Any]) -> Any:
        import asyncio

        from livekit import api

        async def call() -> Any:
            async with api.LiveKitAPI(self.livekit.url, LIVEKIT_API_KEY, self.livekit_secret) as lk:
                return await fn(lk)

        return asyncio.run(call())

    def _step(self, name: str, action: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            detail = action()
        except StepFailed as e:
            self._record(name, started, str(e), ok=False)
            self.out(f"Rehearsal failed at step {name!r}.")
            raise
        except Exception as e:  # an unexpected error is still a failed step, named as such
            self._record(name, started, f"{type(e).__name__}: {e}", ok=False)
            self.out(f"Rehearsal failed at step {name!r}.")
            raise StepFailed(str(e)) from e
        self._record(name, started, detail)

    def _step_teardown(self, stop: Callable[[], None]) -> None:
        started = time.perf_counter()
        stop()
        self._record("teardown", started, "endpoints stopped; nothing persists")

    def _record(self, name: str, started: float, detail: str, *, ok: bool = True) -> None:
        result = StepResult(name, time.perf_counter() - started, detail, ok)
        self.results.append(result)
        self.out(f"  {'ok' if ok else 'FAILED':<6} {name:<22} {result.seconds:5.1f} s  {detail}")

    def _env(self) -> dict[str, str]:
        """A clean environment: only the local endpoint and fake credentials, never the caller's AWS settings."""
        keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "TERM")}
        endpoints = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            # The CLI hands CloudFormation a template URL; with 127.0.0.1 moto would read the host as a bucket.
            "AWS_ENDPOINT_URL_S3_FOR_CLOUDFORMATION": self.endpoint_url.replace("127.0.0.1", "localhost"),
        }
        return {
            **keep,
            **FAKE_AWS_ENV,
            "PATH": os.pathsep.join(
                [str(self.root / "node_modules" / ".bin"), str(Path(sys.executable).parent), os.defpath]
            ),
            # Empty before the endpoints start (the synths): synthesis talks to no endpoint.
            **(endpoints if self.endpoint_url else {}),
            # Node 22's on-disk compile cache: the CLI's and jsii's JavaScript is parsed once, not in every process.
            "NODE_COMPILE_CACHE": str(self.root / "node_modules" / ".cache" / "callsaver-rehearsal-node"),
            "AWS_REGION": self.config.region,
            "AWS_DEFAULT_REGION": self.config.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "CDK_DISABLE_VERSION_CHECK": "1",
            "CDK_DISABLE_CLI_TELEMETRY": "true",
        }

    def _enforce_iam(self, on: bool) -> None:
        """moto's IAM enforcement: on (every request is authorized against its caller's policies) or off."""
        import urllib.request

        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=b"0" if on else b"inf",
            method="POST",
            # A form content type (urllib's default) would leave the body in Flask's form, not in request.data.
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (the local endpoint)
            response.read()

    def _run_cdk(
        self,
        args: list[str],
        credentials: dict[str, str] | None = None,
        env: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cdk = self.root / "node_modules" / ".bin" / "cdk"
        if not cdk.exists():
            raise StepFailed(f"{cdk} is missing: run `make setup` first")
        return subprocess.run(
            [str(cdk), *args, "-c", f"env={env or self.config.name}"],
            cwd=cwd or self.root, env={**self._env(), **(credentials or {})}, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip

    def _cdk(self, *args: str, env: str | None = None, cwd: Path | None = None) -> None:
        result = self._run_cdk(list(args), env=env, cwd=cwd)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
            raise StepFailed(f"cdk {args[0]} exited {result.returncode}:\n{tail}")

    def _client(self, service: str) -> Any:
        # One client per service: botocore clients are thread-safe, and building one costs tens of milliseconds
        # (ec2's and cloudformation's models hundreds). Building them is not thread-safe, hence the lock.
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = self._new_client(service)
            return self._clients[service]

    def _warm_clients(self) -> None:
        """Build the steps' clients while the first steps wait for their CLI processes."""
        for service in CLIENT_SERVICES:
            self._client(service)

    def _new_client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            region_name=self.config.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def _output(self, stack: str, key: str) -> str:
        try:
            return self.outputs[stack][key]
        except KeyError:
            raise StepFailed(f"stack {stack} has no output {key} in the deploy's outputs file") from None

    def _not_emulated(self) -> str:
        # cdk.out (the environment) and registry.out (Callsaver-Registry)
        templates = [json.loads(t.read_text()) for t in sorted(self.workdir.glob("*.out/*.template.json"))]
        return ", ".join(not_emulated(templates)) or "none"


class Background(Generic[T]):
    """A call run on a thread; result() waits for it and returns its value or raises its exception."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], T]) -> None:
        try:
            self._value = call()
        except BaseException as e:  # handed to the caller of result()
            self._error = e

    def done(self, timeout: float) -> bool:
        """Whether the call has returned, waiting at most timeout seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)


def not_emulated(templates: list[dict[str, Any]]) -> list[str]:
    """Every property the templates set that the moto extension does not apply, as Type.Property (sorted)."""
    from callsaver_infra.dev.rehearsal.moto_ext import EMULATED

    missing: set[str] = set()
    for template in templates:
        for resource in template.get("Resources", {}).values():
            applied = EMULATED.get(resource["Type"])
            if applied is None:
                missing.add(f"{resource['Type']} (whole resource)")
                continue
            missing |= {f"{resource['Type']}.{p}" for p in resource.get("Properties", {}) if p not in applied}
    return sorted(missing)


def _delete_room_request(room: str) -> Any:
    from livekit.protocol import room as proto_room

    return proto_room.DeleteRoomRequest(room=room)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def check_rehearsable(config: EnvironmentConfig) -> None:
    """Refuse any environment that is not on moto's fake account: a rehearsal must never look like a real deploy."""
    if config.account != MOTO_ACCOUNT:
        raise StepFailed(
            f"environment {config.name!r} uses account {config.account}; only an environment on the local "
            f"endpoint's fake account {MOTO_ACCOUNT} (config/local.toml) can be rehearsed"
        )
