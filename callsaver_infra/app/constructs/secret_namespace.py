"""SecretNamespace: the Secrets Manager secrets under one prefix, callsaver/{env}/{namespace}/."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import RemovalPolicy, SecretValue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from callsaver_infra.app.nag import NIST, Ack, acknowledge_all
from callsaver_infra.app.names import EnvNames
from callsaver_infra.app.secret_catalog import PLACEHOLDER, SECRETS


def restrict_reads(secrets: Sequence[secretsmanager.Secret], readers: Sequence[str]) -> None:
    """Give each secret a resource policy denying GetSecretValue to every principal whose ARN is not in readers.

    A Deny, not an Allow: identity policies in the account (AdministratorAccess, `secretsmanager:*` on `*`) would
    otherwise read every environment's secrets; an explicit Deny overrides them. Writes (PutSecretValue, used by
    `callsaver-infra secrets set` and by CloudFormation) and DescribeSecret stay with IAM."""
    # One statement for all of them: it names no secret (Resource "*" is the secret itself in a resource policy),
    # and building it once saves two jsii round trips per secret.
    statement = iam.PolicyStatement(
        sid="DenyReadsExceptNamedRoles",
        effect=iam.Effect.DENY,
        principals=[iam.AnyPrincipal()],
        actions=["secretsmanager:GetSecretValue"],
        resources=["*"],
        conditions={"ArnNotLike": {"aws:PrincipalArn": list(readers)}},
    )
    for secret in secrets:
        secret.add_to_resource_policy(statement)


class SecretNamespace(Construct):
    """One secret per key of the namespace: configuration values from `config_values` (by key), real secrets as a
    placeholder; each readable only by `readers` (role ARNs)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        names: EnvNames,
        namespace: str,
        config_values: Mapping[str, str],
        readers: Sequence[str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.secrets: dict[str, secretsmanager.Secret] = {}
        for spec in (s for s in SECRETS if s.namespace == namespace):
            if spec.from_config is not None:
                value, what = config_values[spec.key], "configuration value owned by the stack (from config)"
            else:
                value, what = PLACEHOLDER, "set by operators with `callsaver-infra secrets set`"
            secret = secretsmanager.Secret(
                self,
                spec.key,
                secret_name=names.secret(spec.ref),
                description=f"{spec.key} for CallSaver {names.env}: {what}.",
                # Not a secret: either a value from config, or the fixed placeholder (real values are set out of
                # band and never pass through a template).
                secret_string_value=SecretValue.unsafe_plain_text(value),
                # A deleted secret would take an operator-set API key with it; the stack must never do that.
                removal_policy=RemovalPolicy.RETAIN,
            )
            acknowledge_all(
                secret,
                [
                    Ack(
                        "SMG4",
                        "Provider API keys (LiveKit, OpenAI, Deepgram, ...) are issued and revoked in each provider's "
                        "console, so Secrets Manager cannot rotate them without a provider-specific Lambda; operators "
                        "rotate by setting the new value with `callsaver-infra secrets set`. Config-owned values "
                        "(LIVEKIT_URL, SESSION_S3_BUCKET) are not credentials.",
                    ),
                    Ack(
                        "SecretsManagerRotationEnabled",
                        "Provider API keys are issued and revoked in each provider's console, so Secrets Manager "
                        "cannot rotate them without provider-specific Lambdas; operators rotate with `callsaver-infra "
                        "secrets set`. Config-owned values (LIVEKIT_URL, SESSION_S3_BUCKET) are not credentials.",
                        pack=NIST,
                    ),
                    Ack(
                        "SecretsManagerUsingKMSKey",
                        "Encrypted with the AWS managed key aws/secretsmanager; who may read is decided by the "
                        "secret's resource policy (deny except the agent's execution role, the deploy hook and "
                        "break-glass), not by a key policy.",
                        pack=NIST,
                    ),
                ],
            )
            self.secrets[spec.key] = secret
        restrict_reads(list(self.secrets.values()), readers)
