"""AlertTopic: the encrypted SNS topic every alarm and the deploy-failure rule of one environment publish to."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

# The services that publish here: CloudWatch alarms and EventBridge rules.
PUBLISHERS = ("cloudwatch.amazonaws.com", "events.amazonaws.com")


class AlertTopic(Construct):
    """A TLS-only topic encrypted with its own KMS key, that only this account's alarms and rules may publish to."""

    def __init__(
        self, scope: Construct, construct_id: str, *, topic_name: str, key_alias: str, emails: Sequence[str]
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # A customer-managed key: the AWS-managed alias/aws/sns key's policy cannot be changed and does not let
        # CloudWatch alarms use it, so alarms on a topic encrypted with it fail to notify (AWS re:Post,
        # "cloudwatch-configure-alarm-sns"). The key guards only messages in flight, so it may go with the stack.
        self.key = kms.Key(
            self,
            "Key",
            alias=key_alias,
            description=f"Encrypts the messages of SNS topic {topic_name}",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        # SNS asks KMS for a data key with the publisher's identity: the two publishing services need the key.
        # Who may publish at all is decided by the topic policy below (this account's alarms and rules only).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAlarmAndRulePublishersToEncrypt",
                principals=[iam.ServicePrincipal(p) for p in PUBLISHERS],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=topic_name,
            display_name=f"CallSaver alerts ({topic_name})",
            master_key=self.key,
            enforce_ssl=True,
        )
        # Read once: every attribute read is a jsii round trip.
        partition, region, account, topic_arn = stack.partition, stack.region, stack.account, self.topic.topic_arn
        sources = {
            "cloudwatch.amazonaws.com": f"arn:{partition}:cloudwatch:{region}:{account}:alarm:*",
            "events.amazonaws.com": f"arn:{partition}:events:{region}:{account}:rule/*",
        }
        for service, source_arn in sources.items():
            self.topic.add_to_resource_policy(
                iam.PolicyStatement(
                    sid=f"Allow{service.split('.')[0].capitalize()}OfThisAccountToPublish",
                    principals=[iam.ServicePrincipal(service)],
                    actions=["sns:Publish"],
                    resources=[topic_arn],
                    conditions={
                        "StringEquals": {"aws:SourceAccount": account},
                        "ArnLike": {"aws:SourceArn": source_arn},
                    },
                )
            )
        # Identity policies of the account's users and roles would otherwise let them publish too: an alert that
        # anyone can fake is noise. Operators test the path with `aws cloudwatch set-alarm-state` instead.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyPublishByAnythingButAwsServices",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"Bool": {"aws:PrincipalIsAWSService": "false"}},
            )
        )
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.action = cw_actions.SnsAction(self.topic)
