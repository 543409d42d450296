"""DeployFailureRule: tells the alert topic when ECS's circuit breaker fails (and rolls back) an agent deploy."""

from __future__ import annotations

import jsii
from aws_cdk import Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_sns as sns
from aws_cdk.interfaces import aws_events as events_refs
from constructs import Construct

# ECS sends "ECS Deployment State Change" events to the default bus; SERVICE_DEPLOYMENT_FAILED is the circuit
# breaker's verdict, sent whether or not it rolls back (ECS developer guide, "Amazon ECS service deployment events").
DETAIL_TYPE = "ECS Deployment State Change"
FAILED = "SERVICE_DEPLOYMENT_FAILED"


class DeployFailureRule(Construct):
    """An EventBridge rule matching failed deployments of one ECS service, publishing a readable message."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        rule_name: str,
        cluster_name: str,
        service_name: str,
        log_group_name: str,
        topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.service_arn = stack.format_arn(
            service="ecs", resource="service", resource_name=f"{cluster_name}/{service_name}"
        )
        self.rule = events.Rule(
            self,
            "Rule",
            rule_name=rule_name,
            description=f"CallSaver {env_name}: a deployment of {service_name} failed and was rolled back",
            event_pattern=events.EventPattern(
                source=["aws.ecs"],
                detail_type=[DETAIL_TYPE],
                resources=[self.service_arn],
                detail={"eventName": [FAILED]},
            ),
        )
        deployment = events.EventField.from_path("$.detail.deploymentId")
        service = events.EventField.from_path("$.resources[0]")
        reason = events.EventField.from_path("$.detail.reason")
        at = events.EventField.from_path("$.time")
        self.rule.add_target(
            _TopicTarget(
                topic,
                events.RuleTargetInput.from_text(
                    f"CallSaver {env_name}: deployment {deployment} of ECS service {service} failed at {at} and "
                    f"was rolled back: {reason}. The previous task definition keeps serving calls. Check first: "
                    f"`callsaver-infra status --env {env_name}`, `aws ecs describe-services --cluster "
                    f"{cluster_name} --services {service_name} --query 'services[0].events[:10]'`, and the log "
                    f"group {log_group_name} of the failed tasks."
                ),
            )
        )


@jsii.implements(events.IRuleTarget)
class _TopicTarget:
    """The topic as a rule target, without the grant aws_events_targets.SnsTopic adds: that grant lets any
    EventBridge rule of any account publish, while AlertTopic's policy admits only this account's rules."""

    def __init__(self, topic: sns.ITopic, message: events.RuleTargetInput) -> None:
        self.topic, self.message = topic, message

    def bind(self, rule: events_refs.IRuleRef, id: str | None = None) -> events.RuleTargetConfig:
        return events.RuleTargetConfig(arn=self.topic.topic_arn, input=self.message)
