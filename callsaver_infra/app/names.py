"""Every name other code, the CLI, the README and operators rely on, derived from the environment in one place.

Stack names and output keys are an interface: the post-deploy hook and the backend read them, so they must never
change by accident (the snapshot tests pin them).
"""

from __future__ import annotations

from dataclasses import dataclass

from callsaver_infra.app.regions import partition

PROJECT = "Callsaver"
EGRESS_POLICY_NAME = "LiveKitEgressS3Access"
# The egress writer's key pair, written by the IAM stack under callsaver/{env}/ beside the catalog's secrets.
EGRESS_CREDENTIALS_REF = "egress/s3-access-key"
# Objects push-egress --verify and the key check write, which the recording alarms and status leave out.
# aws-cdk-lib's DefaultStackSynthesizer.DEFAULT_QUALIFIER, as data: loading config must not start Node (operator
# commands); tests/test_bootstrap.py keeps it equal to the library's.
CDK_DEFAULT_QUALIFIER = "hnb659fds"
HEALTHCHECK_PREFIX = "_healthcheck/"


class StorageOutputs:
    """Output keys of the Storage stack."""

    BUCKET_NAME = "SessionBucketName"
    BUCKET_ARN = "SessionBucketArn"
    BUCKET_REGION = "SessionBucketRegion"
    KEY_ARN = "SessionKeyArn"
    READER_ROLE_ARN = "RecordingReaderRoleArn"
    READER_POLICY_ARN = "RecordingReaderPolicyArn"
    READS_LOG_BUCKET = "RecordingReadsLogBucketName"


class IamOutputs:
    """Output keys of the IAM stack."""

    USER_NAME = "EgressUserName"
    ACCESS_KEY_ID = "EgressAccessKeyId"
    CREDENTIALS_SECRET_ARN = "EgressCredentialsSecretArn"


class AgentOutputs:
    """Output keys of the Agent stack."""

    CLUSTER_NAME = "AgentClusterName"
    SERVICE_NAME = "AgentServiceName"
    LOG_GROUP = "AgentLogGroupName"


class AgentEnvironment:
    """Variables the agent's container receives beyond the secrets of the catalog (docs/push-egress.md, "Agent
    identity" and "Which calls are recorded"): its LiveKit identity and what it needs to record the calls it places."""

    AGENT_NAME = "LIVEKIT_AGENT_NAME"  # read by livekit-agents itself (ServerOptions.agent_name)
    WORKER_NAME = "LIVEKIT_WORKER_NAME"  # read by the seed's agent code; same value
    RECORDING_BUCKET = "SESSION_S3_BUCKET"
    RECORDING_REGION = "SESSION_S3_REGION"
    RECORDING_FILEPATH = "SESSION_S3_FILEPATH"
    RECORDING_ACCESS_KEY_ID = "SESSION_S3_ACCESS_KEY_ID"
    RECORDING_SECRET_ACCESS_KEY = "SESSION_S3_SECRET_ACCESS_KEY"


# JSON keys of the egress credentials secret (written by EgressWriter, read by the hook and injected into the agent).
EGRESS_SECRET_KEY_ID_FIELD = "accessKeyId"
EGRESS_SECRET_SECRET_FIELD = "secretAccessKey"


class MonitoringOutputs:
    """Output keys of the Monitoring stack."""

    TOPIC_ARN = "AlertTopicArn"
    DASHBOARD_NAME = "DashboardName"


@dataclass(frozen=True)
class EnvNames:
    """The names of one environment's stacks and named resources."""

    env: str

    @property
    def storage_stack(self) -> str:
        return f"{PROJECT}-Storage-{self.env}"

    @property
    def session_key_alias(self) -> str:
        """The alias of the customer-managed key the recordings are encrypted with."""
        return f"alias/callsaver/{self.env}/sessions"

    @property
    def recording_reader(self) -> str:
        """The RecordingReader role and managed policy: the only identity that may read recordings."""
        return f"callsaver-recording-reader-{self.env}"

    @property
    def recording_reads_trail(self) -> str:
        """The CloudTrail trail logging every read of a recording (S3 data events)."""
        return f"callsaver-recording-reads-{self.env}"

    @property
    def iam_stack(self) -> str:
        return f"{PROJECT}-IAM-{self.env}"

    @property
    def egress_user(self) -> str:
        return f"callsaver-livekit-egress-{self.env}"

    @property
    def egress_credentials_secret(self) -> str:
        return self.secret(EGRESS_CREDENTIALS_REF)

    @property
    def secrets_stack(self) -> str:
        return f"{PROJECT}-Secrets-{self.env}"

    @property
    def agent_stack(self) -> str:
        return f"{PROJECT}-Agent-{self.env}"

    @property
    def agent_cluster(self) -> str:
        return f"callsaver-{self.env}"

    @property
    def agent_service(self) -> str:
        return f"callsaver-agent-{self.env}"

    @property
    def agent_execution_role(self) -> str:
        """The agent tasks' execution role (fixed: the secrets' resource policies name it)."""
        return f"callsaver-agent-execution-{self.env}"

    @property
    def agent_log_group(self) -> str:
        return f"/callsaver/{self.env}/agent"

    @property
    def monitoring_stack(self) -> str:
        return f"{PROJECT}-Monitoring-{self.env}"

    @property
    def alert_topic(self) -> str:
        return f"callsaver-alerts-{self.env}"

    @property
    def alert_key_alias(self) -> str:
        return f"alias/callsaver-alerts-{self.env}"

    @property
    def dashboard(self) -> str:
        return f"{PROJECT}-{self.env}"

    @property
    def deploy_failed_rule(self) -> str:
        return f"callsaver-{self.env}-agent-deploy-failed"

    @property
    def alarm_agent_down(self) -> str:
        return f"callsaver-{self.env}-agent-down"

    @property
    def alarm_agent_saturated(self) -> str:
        return f"callsaver-{self.env}-agent-saturated"

    @property
    def alarm_uploads_failing(self) -> str:
        return f"callsaver-{self.env}-uploads-failing"

    @property
    def alarm_no_recording(self) -> str:
        """Exists only when `monitoring.max_hours_without_recording` is set."""
        return f"callsaver-{self.env}-no-recording"

    @property
    def alarms(self) -> tuple[str, ...]:
        """Every alarm the Monitoring stack may create (for `status`; describe_alarms skips absent names)."""
        return (self.alarm_agent_down, self.alarm_agent_saturated, self.alarm_uploads_failing, self.alarm_no_recording)

    @property
    def egress_push_receipt(self) -> str:
        """SSM parameter where push-egress records which key pair it last wrote into each dispatch rule."""
        return f"/callsaver/{self.env}/livekit/egress-push-receipt"

    @property
    def stacks(self) -> tuple[str, ...]:
        """Every stack of the environment."""
        return (self.storage_stack, self.iam_stack, self.secrets_stack, self.agent_stack, self.monitoring_stack)

    def secret(self, ref: str) -> str:
        """The Secrets Manager name of `ref` ("backend/LIVEKIT_API_KEY"): callsaver/{env}/backend/LIVEKIT_API_KEY."""
        return f"callsaver/{self.env}/{ref}"


# Id of the session bucket's S3 request-metrics configuration: the FilterId dimension of its CloudWatch metrics.
RECORDING_METRICS_FILTER_ID = "Recordings"


def pr_comment_header(env: str) -> str:
    """The key of env's `cdk diff` pull-request comment: the `header` input of marocchino/sticky-pull-request-comment
    (pinned in .github/workflows/pull-request.yml), which finds and updates the comment by it."""
    return f"cdk-diff:{env}"


def pr_comment_marker(env: str) -> str:
    """The hidden line the action ends env's comment with (src/comment.ts, headerComment, of the pinned release)."""
    return f"<!-- Sticky Pull Request Comment{pr_comment_header(env)} -->"


# The account-level stack holding the GitHub OIDC provider and the roles the workflows assume (`-c env=ci`).
CI_STACK = f"{PROJECT}-CI"


def pascal_case(env: str) -> str:
    """An environment name as part of a construct id or output key (alphanumeric): "qa-eu" -> "QaEu"."""
    return "".join(part.capitalize() for part in env.split("-"))


# The account-level stack holding the agent image's ECR repository (`-c env=registry`).
REGISTRY_STACK = f"{PROJECT}-Registry"
# The role the agent repository's CI pushes images through, when the registry trusts it by GitHub OIDC subject.
REGISTRY_PUSH_ROLE = "callsaver-agent-image-push"


class RegistryOutputs:
    """Output keys of the registry stack."""

    REPOSITORY_NAME = "AgentRepositoryName"
    REPOSITORY_URI = "AgentRepositoryUri"
    PUSH_ROLE_ARN = "AgentImagePushRoleArn"


class CiOutputs:
    """Output keys of the CI stack, and the GitHub repository variables each role ARN goes into."""

    PROVIDER_ARN = "GitHubOidcProviderArn"
    DIFF_ROLE_ARN = "DiffRoleArn"
    DIFF_ROLE_VARIABLE = "AWS_DIFF_ROLE_ARN"

    @staticmethod
    def deploy_role_arn(env: str) -> str:
        """Output key of env's deploy role ARN: DeployRoleArnStaging."""
        return f"DeployRoleArn{pascal_case(env)}"

    @staticmethod
    def deploy_role_variable(env: str) -> str:
        """Repository variable the workflows read env's deploy role ARN from: AWS_DEPLOY_ROLE_ARN_STAGING."""
        return f"AWS_DEPLOY_ROLE_ARN_{env.upper().replace('-', '_')}"


class CiNames:
    """Names of the CI stack's roles (fixed, so their ARNs are predictable when connecting a repository)."""

    DIFF_ROLE = "callsaver-ci-diff"

    @staticmethod
    def deploy_role(env: str) -> str:
        """The deploy role of env: callsaver-ci-deploy-staging."""
        return f"callsaver-ci-deploy-{env}"


def iam_arn(*, region: str, account: str, kind: str, name: str) -> str:
    """The ARN of a named IAM role or user (kind "role" or "user"), in the partition of region; known at synth
    time, so a policy can name an identity of another stack without a cross-stack export."""
    return f"arn:{partition(region)}:iam::{account}:{kind}/{name}"
