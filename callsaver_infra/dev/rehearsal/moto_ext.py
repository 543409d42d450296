"""A small extension of moto's CloudFormation for exactly the resource types and properties our stacks use.

Written against moto 5.2.5's extension point: moto builds its resource-type map from the direct subclasses of
`CloudFormationModel` (later ones win), and each model creates its resource through moto's own service backend, so
what a deploy creates is what the ordinary describe calls return. Importing this module registers the models.
`EMULATED` says which properties are applied; the rehearsal lists every other property our templates set as
"not emulated".
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, ClassVar

import moto
from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.cloudformation import models as cfn_models
from moto.cloudformation import parsing
from moto.cloudformation import responses as cfn_responses
from moto.cloudformation.responses import CloudFormationResponse
from moto.cloudwatch.models import Alarm as MotoAlarm
from moto.cloudwatch.models import CloudWatchBackend, MetricDataQuery, MetricStat, cloudwatch_backends
from moto.cloudwatch.models import Dimension as MotoDimension
from moto.core.common_models import CloudFormationModel
from moto.ec2.models import ec2_backends
from moto.ec2.models.route_tables import RouteTable as MotoRouteTable
from moto.ecr.models import Repository as MotoRepository
from moto.ecr.models import ecr_backends
from moto.ecs.models import Service as MotoService
from moto.ecs.models import TaskDefinition as MotoTaskDefinition
from moto.ecs.models import ecs_backends
from moto.events.models import Rule as MotoRule
from moto.events.utils import EventTemplateParser
from moto.iam.access_control import IAMPolicyStatement
from moto.iam.models import InlinePolicy as MotoInlinePolicy
from moto.iam.models import ManagedPolicy as MotoManagedPolicy
from moto.iam.models import Role as MotoRole
from moto.iam.models import iam_backends
from moto.kms.models import Key as MotoKey
from moto.kms.models import kms_backends
from moto.logs.models import LogGroup as MotoLogGroup
from moto.logs.models import logs_backends
from moto.s3.models import FakeBucket, s3_backends
from moto.s3.responses import S3Response
from moto.secretsmanager.models import SecretsManagerBackend, secretsmanager_backends
from moto.sns.models import sns_backends
from moto.ssm.responses import SimpleSystemManagerResponse
from moto.utilities.utils import get_partition

MOTO_VERSION = "5.2.5"
if moto.__version__ != MOTO_VERSION:  # the extension reaches into moto's internals: pin and check
    raise RuntimeError(
        f"callsaver_infra.dev.rehearsal.moto_ext was written for moto {MOTO_VERSION}, not {moto.__version__}"
    )

# Properties each resource type applies (ours plus what stock moto already applies and the checks verify).
EMULATED: dict[str, frozenset[str]] = {
    "AWS::S3::Bucket": frozenset(
        {
            "BucketName",
            "BucketEncryption",
            "Tags",
            "LifecycleConfiguration",
            "PublicAccessBlockConfiguration",
            "OwnershipControls",
            "VersioningConfiguration",
            "MetricsConfigurations",
        }
    ),
    "AWS::S3::BucketPolicy": frozenset({"Bucket", "PolicyDocument"}),
    "AWS::KMS::Key": frozenset({"KeyPolicy", "Description", "EnableKeyRotation", "Enabled", "Tags"}),
    "AWS::KMS::Alias": frozenset({"AliasName", "TargetKeyId"}),
    "AWS::SecretsManager::Secret": frozenset({"Name", "Description", "SecretString", "Tags"}),
    "AWS::SecretsManager::ResourcePolicy": frozenset({"SecretId", "ResourcePolicy"}),
    "AWS::IAM::User": frozenset({"UserName", "Tags"}),
    "AWS::IAM::Policy": frozenset({"PolicyName", "PolicyDocument", "Users", "Roles"}),
    "AWS::IAM::AccessKey": frozenset({"UserName", "Serial", "Status"}),
    "AWS::IAM::Role": frozenset(
        {"AssumeRolePolicyDocument", "Tags", "RoleName", "Description", "MaxSessionDuration", "ManagedPolicyArns"}
    ),
    "AWS::IAM::ManagedPolicy": frozenset({"ManagedPolicyName", "Description", "PolicyDocument"}),
    "AWS::Logs::LogGroup": frozenset({"LogGroupName", "RetentionInDays", "Tags"}),
    "AWS::ECS::Cluster": frozenset({"ClusterName", "Tags"}),
    "AWS::ECS::TaskDefinition": frozenset(
        {
            "Family",
            "ContainerDefinitions",
            "Cpu",
            "Memory",
            "NetworkMode",
            "RequiresCompatibilities",
            "ExecutionRoleArn",
            "TaskRoleArn",
            "RuntimePlatform",
            "Tags",
        }
    ),
    "AWS::ECS::Service": frozenset(
        {
            "ServiceName",
            "Cluster",
            "TaskDefinition",
            "DesiredCount",
            "LaunchType",
            "NetworkConfiguration",
            "DeploymentConfiguration",
            "PlatformVersion",
            "Tags",
        }
    ),
    "AWS::ApplicationAutoScaling::ScalableTarget": frozenset(
        {"ServiceNamespace", "ResourceId", "ScalableDimension", "MinCapacity", "MaxCapacity", "RoleARN"}
    ),
    "AWS::ApplicationAutoScaling::ScalingPolicy": frozenset(
        {"PolicyName", "PolicyType", "ScalingTargetId", "TargetTrackingScalingPolicyConfiguration"}
    ),
    "AWS::ECR::Repository": frozenset(
        {
            "RepositoryName",
            "ImageTagMutability",
            "ImageScanningConfiguration",
            "EncryptionConfiguration",
            "LifecyclePolicy",
            "RepositoryPolicyText",
            "Tags",
        }
    ),
    "AWS::EC2::VPC": frozenset({"CidrBlock", "EnableDnsHostnames", "EnableDnsSupport", "InstanceTenancy", "Tags"}),
    "AWS::EC2::Subnet": frozenset({"VpcId", "CidrBlock", "AvailabilityZone", "MapPublicIpOnLaunch", "Tags"}),
    "AWS::EC2::RouteTable": frozenset({"VpcId", "Tags"}),
    "AWS::EC2::SubnetRouteTableAssociation": frozenset({"RouteTableId", "SubnetId"}),
    "AWS::EC2::Route": frozenset({"RouteTableId", "DestinationCidrBlock", "GatewayId"}),
    "AWS::EC2::InternetGateway": frozenset({"Tags"}),
    "AWS::EC2::VPCGatewayAttachment": frozenset({"VpcId", "InternetGatewayId"}),
    "AWS::EC2::SecurityGroup": frozenset({"GroupDescription", "VpcId", "SecurityGroupEgress", "Tags"}),
    # Monitoring: stock moto creates aliases, topics, dashboards and rules; alarms and topic policies are ours.
    "AWS::SNS::Topic": frozenset({"TopicName", "DisplayName", "KmsMasterKeyId"}),
    "AWS::SNS::TopicPolicy": frozenset({"PolicyDocument", "Topics"}),
    "AWS::CloudWatch::Alarm": frozenset(
        {
            "AlarmName",
            "AlarmDescription",
            "AlarmActions",
            "OKActions",
            "ActionsEnabled",
            "ComparisonOperator",
            "DatapointsToAlarm",
            "Dimensions",
            "EvaluationPeriods",
            "MetricName",
            "Metrics",
            "Namespace",
            "Period",
            "Statistic",
            "Threshold",
            "TreatMissingData",
            "Tags",
        }
    ),
    "AWS::CloudWatch::Dashboard": frozenset({"DashboardName", "DashboardBody"}),
    "AWS::Events::Rule": frozenset({"Name", "Description", "EventPattern", "State", "Targets", "Tags"}),
}


def _camel(value: Any) -> Any:
    """CloudFormation's PascalCase keys to the API's camelCase, recursively (ECS's request shapes)."""
    if isinstance(value, dict):
        return {(k[:1].lower() + k[1:]): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


def _s3(account_id: str, region_name: str) -> Any:
    return s3_backends[account_id][get_partition(region_name)]


# Identifiers (bucket name, secret ARN, log group name) of the resources an IMPORT change set being executed adopts:
# a model creating one of them binds the existing resource instead and applies nothing, as CloudFormation's import.
_ADOPTING: set[tuple[str, str]] = set()
# ResourcesToImport of each IMPORT change set, by stack name, kept from CreateChangeSet until it is executed.
_IMPORTS: dict[str, list[dict[str, Any]]] = {}


def _adopting(resource_type: str, identifier: str) -> bool:
    return (resource_type, identifier) in _ADOPTING


class _Typed:
    """The resource type and name property of a model, as class attributes (moto asks the class for both).

    A mixin, not a base class: moto only registers direct subclasses of CloudFormationModel."""

    CFN_TYPE: ClassVar[str]
    NAME_TYPE: ClassVar[str] = ""

    @classmethod
    def cloudformation_type(cls) -> str:
        return cls.CFN_TYPE

    @classmethod
    def cloudformation_name_type(cls) -> str:
        return cls.NAME_TYPE


class _KeepsIdentity:
    """An update that keeps the resource as it is: moto drops a resource whose model returns None from an update,
    and these resources keep their identity (name, id); the stacks never change them in place. A mixin, like
    `_Typed`."""

    @classmethod
    def update_from_cloudformation_json(
        cls,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
    ) -> Any:
        return original_resource


class RehearsalBucket(_Typed, CloudFormationModel):
    """AWS::S3::Bucket: moto's bucket plus lifecycle rules, public access block, ownership controls, versioning and
    the bucket key flag of default encryption."""

    CFN_TYPE = "AWS::S3::Bucket"
    NAME_TYPE = "BucketName"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> FakeBucket:
        if _adopting(cls.CFN_TYPE, resource_name):
            adopted: FakeBucket = _s3(account_id, region_name).get_bucket(resource_name)
            return adopted
        bucket = FakeBucket.create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kwargs
        )
        cls._apply(bucket.name, cloudformation_json.get("Properties", {}), account_id, region_name)
        return bucket

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> FakeBucket:
        bucket = FakeBucket.update_from_cloudformation_json(
            original_resource, new_resource_name, cloudformation_json, account_id, region_name
        )
        cls._apply(bucket.name, cloudformation_json.get("Properties", {}), account_id, region_name)
        return bucket

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        FakeBucket.delete_from_cloudformation_json(resource_name, cloudformation_json, account_id, region_name)

    @staticmethod
    def _apply(name: str, props: dict[str, Any], account_id: str, region_name: str) -> None:
        backend = _s3(account_id, region_name)
        if "LifecycleConfiguration" in props:
            rules = []
            for rule in props["LifecycleConfiguration"]["Rules"]:
                api_rule: dict[str, Any] = {"ID": rule.get("Id"), "Status": rule["Status"], "Filter": {"Prefix": ""}}
                if "ExpirationInDays" in rule:
                    api_rule["Expiration"] = {"Days": rule["ExpirationInDays"]}
                if "AbortIncompleteMultipartUpload" in rule:
                    api_rule["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
                if "NoncurrentVersionExpiration" in rule:
                    api_rule["NoncurrentVersionExpiration"] = rule["NoncurrentVersionExpiration"]
                if "ExpiredObjectDeleteMarker" in rule:
                    # S3 rejects a rule with both Days and ExpiredObjectDeleteMarker; moto's set_lifecycle too.
                    api_rule.setdefault("Expiration", {})["ExpiredObjectDeleteMarker"] = rule[
                        "ExpiredObjectDeleteMarker"
                    ]
                rules.append(api_rule)
            backend.put_bucket_lifecycle_configuration(name, rules)
        if "PublicAccessBlockConfiguration" in props:
            backend.put_public_access_block(name, props["PublicAccessBlockConfiguration"])
        if "OwnershipControls" in props:
            backend.put_bucket_ownership_controls(name, props["OwnershipControls"]["Rules"][0]["ObjectOwnership"])
        if "VersioningConfiguration" in props:
            backend.put_bucket_versioning(name, props["VersioningConfiguration"]["Status"])
        rules = props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
        if rules and "BucketKeyEnabled" in rules[0]:
            # moto's CloudFormation bucket drops the flag; its PutObject reads it from the stored rule.
            backend.get_bucket(name).encryption["Rule"]["BucketKeyEnabled"] = rules[0]["BucketKeyEnabled"]
        # moto's S3 has no metrics configurations: kept on the bucket, served by `_metrics_configuration_get`.
        bucket = backend.get_bucket(name)
        bucket.metrics_configurations = {m["Id"]: m for m in props.get("MetricsConfigurations", [])}


class RehearsalBucketPolicy(_Typed, CloudFormationModel):
    """AWS::S3::BucketPolicy, stored on moto's bucket (see `_policy_without_conditional_statements` for enforcement)."""

    CFN_TYPE = "AWS::S3::BucketPolicy"

    def __init__(self, bucket_name: str) -> None:
        self.bucket_name = bucket_name

    @property
    def physical_resource_id(self) -> str:
        return self.bucket_name

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> RehearsalBucketPolicy:
        props = cloudformation_json["Properties"]
        bucket = props["Bucket"]
        bucket_name = bucket.name if isinstance(bucket, FakeBucket) else str(bucket)
        if _adopting(cls.CFN_TYPE, bucket_name):
            return cls(bucket_name)
        _s3(account_id, region_name).put_bucket_policy(bucket_name, json.dumps(props["PolicyDocument"]).encode())
        return cls(bucket_name)

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> RehearsalBucketPolicy:
        # Bucket is create-only for AWS::S3::BucketPolicy, PolicyDocument is updated in place (PutBucketPolicy).
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        # Reached only without DeletionPolicy Retain: moto's stack deletion skips retained resources.
        _s3(account_id, region_name).delete_bucket_policy(resource_name)


class RehearsalSecret(_Typed, CloudFormationModel):
    """AWS::SecretsManager::Secret through moto's Secrets Manager backend; Ref is the secret's ARN."""

    CFN_TYPE = "AWS::SecretsManager::Secret"
    NAME_TYPE = "Name"

    def __init__(self, arn: str, name: str) -> None:
        self.arn = arn
        self.name = name
        self.template_value: str | None = None  # the SecretString of the last template applied

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Id"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self.arn

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> RehearsalSecret:
        props = cloudformation_json["Properties"]
        name = props.get("Name", resource_name)
        backend = secretsmanager_backends[account_id][region_name]
        if backend._is_valid_identifier(name) and _adopting(cls.CFN_TYPE, backend.secrets[name].arn):
            # Imported: the stored value stays; the template's value counts as applied (no rewrite on next deploy).
            adopted = cls(backend.secrets[name].arn, name)
            adopted.template_value = props.get("SecretString")
            return adopted
        created = secretsmanager_backends[account_id][region_name].create_secret(
            name=name,
            secret_string=props.get("SecretString"),
            secret_binary=None,
            description=props.get("Description"),
            tags=props.get("Tags"),
            kms_key_id=None,
            client_request_token=None,
            replica_regions=[],
            force_overwrite=False,
        )
        secret = cls(json.loads(created)["ARN"], name)
        secret.template_value = props.get("SecretString")
        return secret

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> RehearsalSecret:
        props = cloudformation_json["Properties"]
        if props.get("Name", new_resource_name) != original_resource.name:  # Name is create-only: replacement
            new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
            _replace_old(cls, original_resource.arn, cloudformation_json, account_id, region_name)
            return new
        backend = secretsmanager_backends[account_id][region_name]
        # CloudFormation writes SecretString only when the template's value changed: an operator's value set with
        # PutSecretValue survives every other update (a changed description, tags, ...).
        if props.get("SecretString") != getattr(original_resource, "template_value", None):
            backend.put_secret_value(original_resource.arn, props.get("SecretString"), None, None, ["AWSCURRENT"])  # type: ignore[arg-type]
        if "Description" in props:
            # Set on the stored secret: moto's UpdateSecret without a value would add an empty version.
            setattr(backend.secrets[original_resource.arn], "description", props["Description"])  # noqa: B010
        original_resource.template_value = props.get("SecretString")
        return original_resource  # type: ignore[no-any-return]

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        secretsmanager_backends[account_id][region_name].delete_secret(resource_name, None, True)


class RehearsalRole(_Typed, _KeepsIdentity, CloudFormationModel):
    """AWS::IAM::Role: moto's role (name, description, session duration, inline policies) plus the managed
    policies of ManagedPolicyArns, which stock moto drops, so a role holds its managed policy's rights."""

    CFN_TYPE = "AWS::IAM::Role"
    NAME_TYPE = "RoleName"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> MotoRole:
        role = MotoRole.create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kwargs
        )
        backend = iam_backends[account_id][get_partition(region_name)]
        for policy in cloudformation_json["Properties"].get("ManagedPolicyArns", []):
            arn = str(getattr(policy, "arn", policy))
            # moto loads no AWS managed policies by default (the bootstrap's roles name ReadOnlyAccess and
            # AdministratorAccess); those are left unattached, our own policies must attach.
            if ":iam::aws:policy/" in arn and arn not in {p.arn for p in backend.managed_policies.values()}:
                continue
            backend.attach_role_policy(arn, role.name)
        return role

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        # CloudFormation detaches the role's ManagedPolicyArns before deleting it; moto's IAM refuses (DeleteConflict)
        # to delete a role with attached policies.
        backend = iam_backends[account_id][get_partition(region_name)]
        role = next((r for r in backend.roles.values() if r.name == resource_name), None)
        if role is not None:
            for arn in list(role.managed_policies):
                if arn in backend.managed_policies:
                    backend.detach_role_policy(arn, role.name)
        # Stock moto then drops the role from every AWS::IAM::Policy's Roles, iterating each one's list: a policy for
        # users or groups only has None there (InlinePolicy keeps Properties.get("Roles")), a TypeError that would
        # leave the role and its stack undeletable.
        for policy in backend.inline_policies.values():
            if policy.role_names is None:
                policy.role_names = []
        MotoRole.delete_from_cloudformation_json(resource_name, cloudformation_json, account_id, region_name)


class RehearsalSecretResourcePolicy(_Typed, CloudFormationModel):
    """AWS::SecretsManager::ResourcePolicy, stored with moto's PutResourcePolicy (GetResourcePolicy returns it)."""

    CFN_TYPE = "AWS::SecretsManager::ResourcePolicy"

    def __init__(self, secret_id: str) -> None:
        self.secret_id = secret_id

    @property
    def physical_resource_id(self) -> str:
        return self.secret_id

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> RehearsalSecretResourcePolicy:
        props = cloudformation_json["Properties"]
        secret = props["SecretId"]
        secret_id = secret.arn if isinstance(secret, RehearsalSecret) else str(secret)
        policy = props["ResourcePolicy"]
        secretsmanager_backends[account_id][region_name].put_resource_policy(
            secret_id, policy if isinstance(policy, str) else json.dumps(policy)
        )
        return cls(secret_id)


class RehearsalRepository(_Typed, CloudFormationModel):
    """AWS::ECR::Repository with its lifecycle policy and repository policy, which stock moto drops, and its scan and
    encryption settings in the API's shape (stock moto stores CloudFormation's PascalCase keys as given).

    Property shapes: the AWS::ECR::Repository resource reference (LifecyclePolicy.LifecyclePolicyText is the JSON
    text PutLifecyclePolicy takes; RepositoryPolicyText is a policy document, SetRepositoryPolicy's policyText)."""

    CFN_TYPE = "AWS::ECR::Repository"
    NAME_TYPE = "RepositoryName"

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return MotoRepository.has_cfn_attr(attr)

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> MotoRepository:
        p = cloudformation_json.get("Properties", {})
        backend = ecr_backends[account_id][region_name]
        encryption = p.get("EncryptionConfiguration")
        scanning = p.get("ImageScanningConfiguration")
        repository = backend.create_repository(
            repository_name=resource_name,
            registry_id=None,
            encryption_config=_camel(encryption) if encryption else None,  # type: ignore[arg-type]
            image_scan_config=_camel(scanning) if scanning else None,
            # ECR's default, as CreateRepository applies it when the property is left out.
            image_tag_mutability=p.get("ImageTagMutability", "MUTABLE"),
            tags=p.get("Tags", []),
        )
        if "LifecyclePolicy" in p and "LifecyclePolicyText" in p["LifecyclePolicy"]:
            backend.put_lifecycle_policy(
                repository.registry_id, repository.name, p["LifecyclePolicy"]["LifecyclePolicyText"]
            )
        if "RepositoryPolicyText" in p:
            policy = p["RepositoryPolicyText"]
            backend.set_repository_policy(
                repository.registry_id, repository.name, policy if isinstance(policy, str) else json.dumps(policy)
            )
        return repository


class RehearsalTaskDefinition(_Typed, CloudFormationModel):
    """AWS::ECS::TaskDefinition with the Fargate fields stock moto drops (cpu, network mode, roles, ...)."""

    CFN_TYPE = "AWS::ECS::TaskDefinition"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> MotoTaskDefinition:
        p = cloudformation_json["Properties"]
        return ecs_backends[account_id][region_name].register_task_definition(
            family=p.get("Family", resource_name),
            container_definitions=_camel(p.get("ContainerDefinitions", [])),
            network_mode=p.get("NetworkMode"),
            tags=_camel(p.get("Tags")),
            requires_compatibilities=p.get("RequiresCompatibilities"),
            cpu=p.get("Cpu"),
            memory=p.get("Memory"),
            task_role_arn=p.get("TaskRoleArn"),
            execution_role_arn=p.get("ExecutionRoleArn"),
            runtime_platform=_camel(p.get("RuntimePlatform")),
        )

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> MotoTaskDefinition:
        # Every property of AWS::ECS::TaskDefinition is create-only: a change registers a new revision, and the old
        # one is deregistered afterwards (unless UpdateReplacePolicy is Retain).
        new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
        _replace_old(cls, original_resource.arn, cloudformation_json, account_id, region_name)
        return new

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        ecs_backends[account_id][region_name].deregister_task_definition(resource_name)


class RehearsalService(_Typed, CloudFormationModel):
    """AWS::ECS::Service with launch type, network and deployment configuration, which stock moto drops."""

    CFN_TYPE = "AWS::ECS::Service"
    NAME_TYPE = "ServiceName"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> MotoService:
        p = cloudformation_json["Properties"]
        cluster = getattr(p["Cluster"], "name", p["Cluster"])
        task_definition = p["TaskDefinition"]
        if isinstance(task_definition, MotoTaskDefinition):
            task_definition = task_definition.arn
        service = ecs_backends[account_id][region_name].create_service(
            cluster,
            resource_name,
            p.get("DesiredCount"),
            task_definition_str=task_definition,
            tags=_camel(p.get("Tags")),
            launch_type=p.get("LaunchType"),
            platform_version=p.get("PlatformVersion"),
            network_configuration=_camel(p.get("NetworkConfiguration")),
        )
        if "DeploymentConfiguration" in p:
            # moto's Service has no such field; its response serializer reads the attribute when present.
            setattr(service, "deployment_configuration", _camel(p["DeploymentConfiguration"]))  # noqa: B010
        return service

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> MotoService:
        p = cloudformation_json["Properties"]
        task_definition = p["TaskDefinition"]
        if isinstance(task_definition, MotoTaskDefinition):
            task_definition = task_definition.arn
        backend = ecs_backends[account_id][region_name]
        service = backend.update_service(
            {
                "cluster": original_resource.cluster_name,
                "service": original_resource.name,
                # A new task definition starts a new deployment (new tasks, started now), as ECS does.
                "force_new_deployment": task_definition != original_resource.task_definition,
                "task_definition": task_definition,
                "desired_count": p.get("DesiredCount"),
                "network_configuration": _camel(p.get("NetworkConfiguration")),
            }
        )
        if "DeploymentConfiguration" in p:
            setattr(service, "deployment_configuration", _camel(p["DeploymentConfiguration"]))  # noqa: B010
        return service

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        # The physical id is the service ARN: arn:aws:ecs:<region>:<account>:service/<cluster>/<name>.
        cluster, name = resource_name.split(":service/", 1)[1].split("/")[-2:]
        ecs_backends[account_id][region_name].delete_service(cluster, name, force=True)


class RehearsalScalableTarget(_Typed, CloudFormationModel):
    """AWS::ApplicationAutoScaling::ScalableTarget; Ref is CloudFormation's "resource|dimension|namespace" id."""

    CFN_TYPE = "AWS::ApplicationAutoScaling::ScalableTarget"

    def __init__(self, resource_id: str, dimension: str, namespace: str) -> None:
        self.resource_id, self.dimension, self.namespace = resource_id, dimension, namespace

    @property
    def physical_resource_id(self) -> str:
        return f"{self.resource_id}|{self.dimension}|{self.namespace}"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> RehearsalScalableTarget:
        p = cloudformation_json["Properties"]
        applicationautoscaling_backends[account_id][region_name].register_scalable_target(
            p["ServiceNamespace"],
            p["ResourceId"],
            p["ScalableDimension"],
            int(p["MinCapacity"]),
            int(p["MaxCapacity"]),
            p.get("RoleARN", ""),
            None,  # type: ignore[arg-type]  # moto treats None as "no suspended state", its annotation says str
        )
        return cls(p["ResourceId"], p["ScalableDimension"], p["ServiceNamespace"])


class RehearsalScalingPolicy(_Typed, CloudFormationModel):
    """AWS::ApplicationAutoScaling::ScalingPolicy (target tracking) attached to its scalable target."""

    CFN_TYPE = "AWS::ApplicationAutoScaling::ScalingPolicy"

    def __init__(self, arn: str) -> None:
        self.arn = arn

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> RehearsalScalingPolicy:
        p = cloudformation_json["Properties"]
        resource_id, dimension, namespace = str(p["ScalingTargetId"]).split("|")
        policy = applicationautoscaling_backends[account_id][region_name].put_scaling_policy(
            p["PolicyName"],
            namespace,
            resource_id,
            dimension,
            p["TargetTrackingScalingPolicyConfiguration"],
            p["PolicyType"],
        )
        return cls(policy.policy_arn)


class RehearsalKey(_Typed, _KeepsIdentity, CloudFormationModel):
    """AWS::KMS::Key as stock moto creates it, but with CloudFormation's Tags (Key/Value), which moto's model hands
    to KMS's tagging unchanged although KMS's API names them TagKey/TagValue."""

    CFN_TYPE = "AWS::KMS::Key"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> MotoKey:
        p = cloudformation_json["Properties"]
        backend = kms_backends[account_id][region_name]
        for kind, key_id in _ADOPTING:  # an import binds the retained key by its KeyId
            if kind == cls.CFN_TYPE and key_id in backend.keys:
                return backend.keys[key_id]
        key = backend.create_key(
            policy=json.dumps(p["KeyPolicy"]) if isinstance(p.get("KeyPolicy"), dict) else p.get("KeyPolicy"),
            key_usage=p.get("KeyUsage", "ENCRYPT_DECRYPT"),
            key_spec=p.get("KeySpec", "SYMMETRIC_DEFAULT"),
            description=p.get("Description"),
            tags=[{"TagKey": t["Key"], "TagValue": t["Value"]} for t in p.get("Tags", [])],
        )
        key.key_rotation_status = bool(p.get("EnableKeyRotation", False))
        key.enabled = p.get("Enabled", True)
        return key


class RehearsalInlinePolicy(_Typed, CloudFormationModel):
    """AWS::IAM::Policy as stock moto creates and updates it, deleted like CloudFormation deletes it: a role (user,
    group) that is already gone or no longer holds the policy is no failure, so the stack's deletion goes on."""

    CFN_TYPE = "AWS::IAM::Policy"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        return MotoInlinePolicy.create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kwargs
        )

    @classmethod
    def update_from_cloudformation_json(
        cls,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
    ) -> Any:
        return MotoInlinePolicy.update_from_cloudformation_json(
            original_resource, new_resource_name, cloudformation_json, account_id, region_name
        )

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        # moto deletes a stack's resources in no dependency order and retries what failed: stock moto's delete
        # (IAMBackend.delete_inline_policy) raises NoSuchEntity when a role already lost the policy (deleted first,
        # or an earlier pass removed it), so the stack could never be deleted. CloudFormation's delete handlers
        # treat an entity that is already gone as deleted (the handler contract's NotFound on delete).
        backend = iam_backends[account_id][get_partition(region_name)]
        policy = backend.inline_policies.pop(resource_name, None)
        if policy is None:
            return
        for role in list(backend.roles.values()):
            if role.name in (policy.role_names or []) and policy.policy_name in role.policies:
                role.delete_policy(policy.policy_name)
        for user in list(backend.users.values()):
            if user.name in (policy.user_names or []) and policy.policy_name in user.policies:
                user.delete_policy(policy.policy_name)
        for group in list(backend.groups.values()):
            if group.name in (policy.group_names or []) and policy.policy_name in group.policies:
                group.delete_policy(policy.policy_name)


class RehearsalManagedPolicy(_Typed, _KeepsIdentity, CloudFormationModel):
    """AWS::IAM::ManagedPolicy as stock moto creates it, which a stack deletion never deletes (no delete method):
    CloudFormation deletes it, so a redeploy after `cdk destroy` can create it again under its name."""

    CFN_TYPE = "AWS::IAM::ManagedPolicy"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        return MotoManagedPolicy.create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kwargs
        )

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        backend = iam_backends[account_id][get_partition(region_name)]
        if resource_name in backend.managed_policies:
            # moto deletes a stack's resources in no dependency order: the roles holding it may still exist.
            for role in backend.roles.values():
                if resource_name in role.managed_policies:
                    backend.detach_role_policy(resource_name, role.name)
            backend.delete_policy(resource_name)


class RehearsalAlias(_Typed, _KeepsIdentity, CloudFormationModel):
    """AWS::KMS::Alias as stock moto creates it; an import binds the retained alias by its name."""

    CFN_TYPE = "AWS::KMS::Alias"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        p = cloudformation_json["Properties"]
        backend = kms_backends[account_id][region_name]
        if _adopting(cls.CFN_TYPE, p["AliasName"]):
            key_id = backend.get_key_id_from_alias(p["AliasName"])
            if key_id is not None:
                return backend.keys[key_id].aliases[p["AliasName"]]
        return backend.create_alias(target_key_id=p["TargetKeyId"], alias_name=p["AliasName"])


class RehearsalTopicPolicy(_Typed, CloudFormationModel):
    """AWS::SNS::TopicPolicy, set as each topic's Policy attribute (returned by GetTopicAttributes, not enforced:
    moto's SNS checks no topic policy on Publish)."""

    CFN_TYPE = "AWS::SNS::TopicPolicy"

    def __init__(self, topic_arns: list[str]) -> None:
        self.topic_arns = topic_arns

    @property
    def physical_resource_id(self) -> str:
        return ",".join(self.topic_arns)

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> RehearsalTopicPolicy:
        props = cloudformation_json["Properties"]
        arns = [getattr(t, "arn", t) for t in props["Topics"]]
        for arn in arns:
            sns_backends[account_id][region_name].set_topic_attribute(
                arn, "policy", json.dumps(props["PolicyDocument"])
            )
        return cls(arns)


class RehearsalAlarm(_Typed, CloudFormationModel):
    """AWS::CloudWatch::Alarm through moto's PutMetricAlarm, metric-math alarms (Metrics) included; Ref is the
    alarm's name (CloudFormation's AWS::CloudWatch::Alarm return values)."""

    CFN_TYPE = "AWS::CloudWatch::Alarm"
    NAME_TYPE = "AlarmName"

    def __init__(self, alarm: MotoAlarm) -> None:
        self.name, self.arn = alarm.name, alarm.alarm_arn

    @property
    def physical_resource_id(self) -> str:
        return self.name

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self.arn

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> RehearsalAlarm:
        p = cloudformation_json["Properties"]
        queries = [
            MetricDataQuery(
                query_id=m["Id"],
                label=m.get("Label"),
                period=m.get("Period"),
                return_data=m.get("ReturnData"),
                expression=m.get("Expression"),
                metric_stat=MetricStat(
                    metric=_metric(m["MetricStat"]["Metric"]),
                    period=m["MetricStat"]["Period"],
                    stat=m["MetricStat"]["Stat"],
                    unit=m["MetricStat"].get("Unit"),
                )
                if "MetricStat" in m
                else None,
            )
            for m in p.get("Metrics", [])
        ]
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=resource_name,
            namespace=p.get("Namespace"),
            metric_name=p.get("MetricName"),
            metric_data_queries=queries or None,
            comparison_operator=p["ComparisonOperator"],
            evaluation_periods=int(p["EvaluationPeriods"]),
            datapoints_to_alarm=int(p["DatapointsToAlarm"]) if "DatapointsToAlarm" in p else None,
            period=int(p["Period"]) if "Period" in p else None,  # type: ignore[arg-type]  # math alarms: per metric
            threshold=float(p["Threshold"]),
            statistic=p.get("Statistic"),
            description=p.get("AlarmDescription"),
            dimensions=p.get("Dimensions", []),
            alarm_actions=[str(a) for a in p.get("AlarmActions", [])],
            ok_actions=[str(a) for a in p.get("OKActions", [])],
            actions_enabled=p.get("ActionsEnabled", True),
            treat_missing_data=p.get("TreatMissingData"),
            tags=p.get("Tags"),
        )
        return cls(alarm)


def _metric(metric: dict[str, Any]) -> Any:
    # moto's MetricStat holds the Metric shape as the query API parses it (snake_case keys).
    return {
        "namespace": metric["Namespace"],
        "metric_name": metric["MetricName"],
        "dimensions": [{"Name": d["Name"], "Value": d["Value"]} for d in metric.get("Dimensions", [])],
    }


def _region_description(region: str) -> str:
    """ "US West (N. California)" for us-west-1: the region as CloudWatch names it in notifications."""
    import botocore.session

    for partition in botocore.session.get_session().get_data("endpoints")["partitions"]:
        if region in partition["regions"]:
            return str(partition["regions"][region]["description"])
    return region


def _publish_alarm_state_changes(original: Any) -> Any:
    """SetAlarmState and evaluation change an alarm's state; CloudWatch then runs the actions of the new state,
    publishing to each SNS topic among them (moto stores the state only). The message is CloudWatch's JSON
    notification (CloudWatch user guide, "Notifying users on alarm changes": AlarmName, AlarmDescription,
    AWSAccountId, NewStateValue, NewStateReason, StateChangeTime, Region, AlarmArn, OldStateValue, Trigger)."""

    def set_alarm_state(
        self: CloudWatchBackend, alarm_name: str, reason: str, reason_data: str, state_value: str
    ) -> None:
        old = self.alarms[alarm_name].state_value if alarm_name in self.alarms else None
        original(self, alarm_name, reason, reason_data, state_value)
        alarm = self.alarms[alarm_name]
        if old == state_value or not alarm.actions_enabled:
            return  # CloudWatch runs actions on a change of state only
        actions = {"ALARM": alarm.alarm_actions, "OK": alarm.ok_actions}.get(
            state_value, alarm.insufficient_data_actions
        )
        region = _region_description(self.region_name)
        message = {
            "AlarmName": alarm.name,
            "AlarmDescription": alarm.description,
            "AWSAccountId": self.account_id,
            "NewStateValue": state_value,
            "NewStateReason": reason,
            "StateChangeTime": alarm.state_updated_timestamp.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
            "Region": region,
            "AlarmArn": alarm.alarm_arn,
            "OldStateValue": old,
            "Trigger": {
                "MetricName": alarm.metric_name,
                "Namespace": alarm.namespace,
                "Statistic": alarm.statistic,
                "Period": alarm.period,
                "EvaluationPeriods": alarm.evaluation_periods,
                "ComparisonOperator": alarm.comparison_operator,
                "Threshold": alarm.threshold,
                "TreatMissingData": alarm.treat_missing_data,
                "Dimensions": [
                    {"name": d.name, "value": d.value} for d in alarm.dimensions if isinstance(d, MotoDimension)
                ],
            },
        }
        subject = f'{state_value}: "{alarm.name}" in {region}'[:100]  # SNS subjects hold at most 100 characters
        for arn in actions:
            parts = arn.split(":")
            if len(parts) == 6 and parts[2] == "sns":
                sns_backends[parts[4]][parts[3]].publish(json.dumps(message), arn=arn, subject=subject)

    return set_alarm_state


class RehearsalAccessKey(_Typed, CloudFormationModel):
    """AWS::IAM::AccessKey whose Serial replaces the key only when it changes, honouring UpdateReplacePolicy
    (stock moto replaces on every update and always deletes the old key)."""

    CFN_TYPE = "AWS::IAM::AccessKey"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        p = cloudformation_json.get("Properties", {})
        key = iam_backends[account_id][get_partition(region_name)].create_access_key(
            p["UserName"], status=p.get("Status", "Active")
        )
        setattr(key, "rehearsal_serial", (p["UserName"], p.get("Serial")))  # noqa: B010  # moto's AccessKey has no such field
        return key

    @classmethod
    def update_from_cloudformation_json(
        cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> Any:
        p = cloudformation_json.get("Properties", {})
        if (p["UserName"], p.get("Serial")) != getattr(original_resource, "rehearsal_serial", None):
            new = cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)
            _replace_old(cls, original_resource.physical_resource_id, cloudformation_json, account_id, region_name)
            return new
        backend = iam_backends[account_id][get_partition(region_name)]
        backend.update_access_key(p["UserName"], original_resource.access_key_id, p.get("Status", "Active"))
        return original_resource

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        iam_backends[account_id][get_partition(region_name)].delete_access_key_by_name(resource_name)


class RehearsalLogGroup(_Typed, CloudFormationModel):
    """AWS::Logs::LogGroup: moto's, plus adoption by an IMPORT change set."""

    CFN_TYPE = "AWS::Logs::LogGroup"
    NAME_TYPE = "LogGroupName"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> MotoLogGroup:
        name = cloudformation_json.get("Properties", {}).get("LogGroupName", resource_name)
        if _adopting(cls.CFN_TYPE, name):
            return logs_backends[account_id][region_name].groups[name]
        return MotoLogGroup.create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kwargs
        )


class RehearsalRouteTable(_Typed, CloudFormationModel):
    """AWS::EC2::RouteTable that can be deleted: stock moto's has no delete, so its VPC could never be deleted
    (DependencyViolation) and `cdk destroy` of the Agent stack failed. Deleting it drops its subnet associations
    (their own resources have no delete either) and its routes."""

    CFN_TYPE = "AWS::EC2::RouteTable"

    @classmethod
    def create_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> MotoRouteTable:
        return MotoRouteTable.create_from_cloudformation_json(
            resource_name, cloudformation_json, account_id, region_name, **kwargs
        )

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
    ) -> None:
        backend = ec2_backends[account_id][region_name]
        table = backend.get_route_table(resource_name)
        for association_id in list(table._associations):
            backend.disassociate_route_table(association_id)
        backend.delete_route_table(resource_name)


def _replace_old(cls: Any, physical_id: str, resource_json: Any, account_id: str, region_name: str) -> None:
    """The clean-up of a replacement: CloudFormation deletes the old resource unless UpdateReplacePolicy is Retain."""
    if resource_json.get("UpdateReplacePolicy") != "Retain":
        cls.delete_from_cloudformation_json(physical_id, resource_json, account_id, region_name)


def _resolve_update_parameters(original: Any) -> Any:
    """UsePreviousValue for a parameter the stack took its Default for (the CDK CLI sends it for BootstrapVersion on
    every update): the previous value is that Default. Stock moto looks it up among the given ones: KeyError."""

    def resolve(self: Any, instance: Any, incoming_params: list[dict[str, Any]]) -> Any:
        # The deployed template: a stack made by a change set keeps the parsed template of its creation ({}).
        try:
            deployed = json.loads(instance.template) if isinstance(instance.template, str) else instance.template
        except ValueError:
            deployed = getattr(instance, "template_dict", {})
        defaults = (deployed or {}).get("Parameters", {})
        patched = []
        for param in incoming_params:
            key = param.get("ParameterKey")
            if param.get("UsePreviousValue") and key not in instance.parameters and "Default" in defaults.get(key, {}):
                param = {"ParameterKey": key, "ParameterValue": defaults[key]["Default"]}
            patched.append(param)
        return original(self, instance, patched)

    return resolve


class _NoOutputs(dict):  # type: ignore[type-arg]
    """The output map of a rolled-back stack: no outputs, no exports."""

    exports: ClassVar[list[Any]] = []


def _create_or_roll_back(original: Any) -> Any:
    """A resource that fails to create makes the stack roll back, as CloudFormation does: what was created is
    deleted and the stack ends ROLLBACK_COMPLETE with the reason in its status and events, answering DescribeStacks
    normally (stock moto leaves it CREATE_IN_PROGRESS and fails every describe)."""

    def create_resources(self: Any) -> None:
        try:
            original(self)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            self._add_stack_event("ROLLBACK_IN_PROGRESS", resource_status_reason=reason)
            # What cannot be rolled back stays, as with CloudFormation's DELETE_FAILED resources.
            with contextlib.suppress(Exception):
                self.resource_map.delete()
            self.output_map = _NoOutputs()
            self.status = "ROLLBACK_COMPLETE"
            self.status_reason = reason
            self._add_stack_event("ROLLBACK_COMPLETE")

    return create_resources


def _references(value: Any) -> set[str]:
    """The logical ids a resource's JSON takes values from (Ref, Fn::GetAtt)."""
    if isinstance(value, dict):
        found: set[str] = set()
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else str(inner).split(".")[0])
            else:
                found |= _references(inner)
        return found
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value)) if value else set()
    return set()


def _diff_with_dependents(original: Any) -> Any:
    """A resource whose Ref/GetAtt input is modified is modified too, after it: CloudFormation re-resolves the
    template, so the egress secret is rewritten when its access key is replaced. Stock moto compares template text
    only, and the secret would keep the deleted key."""

    def build_resource_diff(self: Any, other_template: dict[str, Any], parameters: Any = None) -> dict[str, Any]:
        diff: dict[str, Any] = original(self, other_template, parameters)
        new = other_template["Resources"]
        modified = list(diff["Modify"])
        changed = True
        while changed:
            changed = False
            for name, resource in new.items():
                if name in self._resource_json_map and name not in modified and _references(resource) & set(modified):
                    modified.append(name)
                    changed = True
        diff["Modify"] = modified
        return diff

    return build_resource_diff


def _keep_resources_to_import(original: Any) -> Any:
    """CreateChangeSet: keep an IMPORT change set's ResourcesToImport (stock moto drops them)."""

    def create_change_set(self: Any) -> Any:
        if self._get_param("ChangeSetType") == "IMPORT":
            _IMPORTS[self._get_param("StackName")] = self._get_param("ResourcesToImport", [])
        return original(self)

    return create_change_set


def _execute_import(original: Any) -> Any:
    """ExecuteChangeSet of an IMPORT change set: the listed resources are bound, not created (stock moto would
    create them and fail on their taken names); the stack ends IMPORT_COMPLETE."""

    def execute_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        change_set = self.describe_change_set(change_set_name)
        if change_set is None or change_set.change_set_type != "IMPORT":
            return original(self, change_set_name, stack_name)  # type: ignore[no-any-return]
        resources = _IMPORTS.pop(change_set.stack_name, [])
        _ADOPTING.update((r["ResourceType"], next(iter(r["ResourceIdentifier"].values()))) for r in resources)
        try:
            return original(self, change_set_name, stack_name)  # type: ignore[no-any-return]
        finally:
            _ADOPTING.clear()

    return execute_change_set


def _policy_without_conditional_statements(self: FakeBucket, action: str, resource: str) -> Any:
    """Bucket-policy enforcement of the unconditional statements only. moto evaluates a statement as if its
    Condition were always true, so the TLS-only Deny (aws:SecureTransport=false) and the Deny for the CDK lookup
    role (aws:PrincipalArn) would deny every request; they are stored and returned, not enforced."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    if self.policy is None:
        return PermissionResult.NEUTRAL
    document = json.loads(self.policy)
    document["Statement"] = [s for s in document.get("Statement", []) if "Condition" not in s]
    return IAMPolicy(json.dumps(document)).is_action_permitted(action, resource)


def _account_principal(original: Any) -> Any:
    """A trust policy's account principal (arn:aws:iam::<account>:root, or the bare account id) stands for every
    principal of that account whose own IAM policy allows the call (IAM User Guide, "AWS account principals");
    moto only matches the exact caller ARN, so the RecordingReader role's trust of its account would refuse all."""

    def check(self: Any, principal: str) -> bool:
        if original(self, principal):
            return True
        expected = (self._statement.get("Principal") or {}).get("AWS")
        values = expected if isinstance(expected, list) else [expected]
        parts = principal.split(":")
        if len(parts) < 6 or parts[2] not in ("iam", "sts"):
            return False
        return any(v in (f"arn:{parts[1]}:iam::{parts[4]}:root", parts[4]) for v in values)

    return check


def _stack_resource(self: Any) -> str:
    """The IAM resource of a CloudFormation call naming a stack: the stack's ARN (Service Authorization Reference,
    CloudFormation: DescribeStacks, GetTemplate, ... act on resource type "stack"); moto checks every call against
    "*", which a policy scoped to stack ARNs (CI's diff role) never matches."""
    name = self._get_param("StackName")
    if not name:
        return "*"
    if str(name).startswith("arn:"):
        return str(name)
    try:
        return str(self.cloudformation_backend.get_stack(name).stack_id)
    except Exception:  # a stack that does not exist: AWS authorizes against its would-be ARN
        return f"arn:{get_partition(self.region)}:cloudformation:{self.region}:{self.current_account}:stack/{name}/*"


def _parameter_resource(self: Any) -> str:
    """The IAM resource of ssm:GetParameter: the parameter's ARN (Service Authorization Reference, SSM "parameter"),
    instead of moto's "*"."""
    name = self._get_param("Name")
    if not isinstance(name, str) or not name:
        return "*"
    path = name if name.startswith("/") else f"/{name}"
    return f"arn:{get_partition(self.region)}:ssm:{self.region}:{self.current_account}:parameter{path}"


def _deliver_to_sns_topics(original: Any) -> Any:
    """EventBridge delivers a matching event to each SNS topic among the rule's targets (stock moto only to logs,
    SQS and buses): the input transformer's output, where a JSON string's content is the message text, or else the
    event itself (EventBridge user guide, "Amazon EventBridge input transformation")."""

    def is_topic(target: dict[str, Any]) -> bool:
        parts = str(target["Arn"]).split(":")
        return len(parts) == 6 and parts[2] == "sns"

    def send_to_targets(self: MotoRule, original_event: Any, transform_input: bool = True) -> None:
        # moto raises NotImplementedError on a target type it does not know: hand it only the others.
        targets = self.targets
        self.targets = [t for t in targets if not is_topic(t)]
        try:
            original(self, original_event, transform_input)
        finally:
            self.targets = targets
        if not self.event_pattern.matches_event(original_event):
            return
        for target in filter(is_topic, targets):
            parts = str(target["Arn"]).split(":")
            transformer = target.get("InputTransformer", {})
            payload: Any = original_event
            if transform_input and transformer:
                payload = EventTemplateParser.parse(
                    input_template=transformer.get("InputTemplate"),
                    input_paths_map=transformer.get("InputPathsMap", {}),
                    event=original_event,
                )
            message = payload if isinstance(payload, str) else json.dumps(payload, default=str)
            sns_backends[parts[4]][parts[3]].publish(message, arn=target["Arn"])

    return send_to_targets


_S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _metrics_configuration_xml(config: dict[str, Any]) -> str:
    """One MetricsConfiguration as S3 answers it (S3 API reference, GetBucketMetricsConfiguration): a Filter with a
    Prefix, one Tag, an AccessPointArn, or an And of several; none when it covers the whole bucket."""
    from xml.sax.saxutils import escape

    terms = []
    if "Prefix" in config:
        terms.append(f"<Prefix>{escape(config['Prefix'])}</Prefix>")
    terms += [
        f"<Tag><Key>{escape(t['Key'])}</Key><Value>{escape(t['Value'])}</Value></Tag>"
        for t in config.get("TagFilters", [])
    ]
    if "AccessPointArn" in config:
        terms.append(f"<AccessPointArn>{escape(config['AccessPointArn'])}</AccessPointArn>")
    body = "".join(terms) if len(terms) <= 1 else f"<And>{''.join(terms)}</And>"
    filter_xml = f"<Filter>{body}</Filter>" if terms else ""
    return f"<Id>{escape(config['Id'])}</Id>{filter_xml}"


def _metrics_configuration_get(original: Any) -> Any:
    """GET /?metrics&id=ID (GetBucketMetricsConfiguration) and GET /?metrics (ListBucketMetricsConfigurations);
    a missing id answers 404 NoSuchConfiguration, as S3 does. Stock moto would list the bucket's objects instead."""

    def bucket_response_get(self: S3Response, bucket_name: str, querystring: dict[str, Any]) -> Any:
        if "metrics" not in querystring:
            return original(self, bucket_name, querystring)
        configs = getattr(self.backend.get_bucket(bucket_name), "metrics_configurations", {})
        if "id" in querystring:
            config = configs.get(querystring["id"][0])
            if config is None:
                error = (
                    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchConfiguration</Code>'
                    "<Message>The specified configuration does not exist.</Message></Error>"
                )
                return 404, {"Content-Type": "application/xml"}, error
            xml = (
                f'<MetricsConfiguration xmlns="{_S3_XMLNS}">{_metrics_configuration_xml(config)}</MetricsConfiguration>'
            )
        else:
            items = "".join(
                f"<MetricsConfiguration>{_metrics_configuration_xml(c)}</MetricsConfiguration>"
                for c in configs.values()
            )
            xml = (
                f'<ListMetricsConfigurationsResult xmlns="{_S3_XMLNS}"><IsTruncated>false</IsTruncated>'
                f"{items}</ListMetricsConfigurationsResult>"
            )
        return 200, {"Content-Type": "application/xml"}, '<?xml version="1.0" encoding="UTF-8"?>' + xml

    return bucket_response_get


def _get_azs(original: Any) -> Any:
    """Fn::GetAZs "" means the stack's region; stock moto answers with us-east-1's zones."""

    def clean_json(resource_json: Any, resources_map: Any) -> Any:
        if isinstance(resource_json, dict) and resource_json.keys() == {"Fn::GetAZs"}:
            region = resource_json["Fn::GetAZs"] or resources_map._region_name
            return [f"{region}{zone}" for zone in ("a", "b", "c")]
        return original(resource_json, resources_map)

    return clean_json


def _version_dates_in_milliseconds(original: Any) -> Any:
    """A new secret version is dated in milliseconds when it is stored. Stock moto stores whole seconds
    (`int(time.time())`), dating a version up to a second before its write, so an ECS deployment created just before
    the write (moto/ecs dates those in milliseconds) looked newer than the secret: more lenient than Secrets Manager,
    whose CreatedDate is a JSON timestamp like ECS's (botocore secretsmanager-2017-10-17 CreatedDateType)."""

    def add_or_rotate(self: SecretsManagerBackend, secret_id: str, *args: Any, **kwargs: Any) -> Any:
        before = set(getattr(self.secrets.get(secret_id), "versions", {}))
        result = original(self, secret_id, *args, **kwargs)
        # Taken after the write: a version is never dated before it exists (nor after its response is sent).
        now = int(time.time() * 1000) / 1000
        for version_id, version in getattr(self.secrets.get(secret_id), "versions", {}).items():
            if version_id not in before:
                version["createdate"] = now
        return result

    return add_or_rotate


def _listed_version_dates(original: Any) -> Any:
    """ListSecretVersionIds reports each version's CreatedDate, "the date and time this version of the secret was
    created" (Secrets Manager API reference, SecretVersionsListEntry); stock moto reports the time of the listing
    (moto/secretsmanager/models.py list_secret_version_ids), so every version seemed written just now."""

    def list_secret_version_ids(self: SecretsManagerBackend, secret_id: str) -> str:
        listed = json.loads(original(self, secret_id))
        versions = self.secrets[secret_id].versions
        for entry in listed["Versions"]:
            entry["CreatedDate"] = versions[entry["VersionId"]]["createdate"]
        return json.dumps(listed)

    return list_secret_version_ids


FakeBucket.get_permission = _policy_without_conditional_statements  # type: ignore[method-assign]
CloudFormationResponse._determine_resource = _stack_resource  # type: ignore[attr-defined]
SimpleSystemManagerResponse._determine_resource = _parameter_resource  # type: ignore[attr-defined]
IAMPolicyStatement._check_principal = _account_principal(IAMPolicyStatement._check_principal)  # type: ignore[method-assign]
MotoRule.send_to_targets = _deliver_to_sns_topics(MotoRule.send_to_targets)  # type: ignore[method-assign]
S3Response._bucket_response_get = _metrics_configuration_get(S3Response._bucket_response_get)  # type: ignore[method-assign]
CloudWatchBackend.set_alarm_state = _publish_alarm_state_changes(CloudWatchBackend.set_alarm_state)  # type: ignore[method-assign]
parsing.clean_json = _get_azs(parsing.clean_json)
SecretsManagerBackend._add_secret = _version_dates_in_milliseconds(SecretsManagerBackend._add_secret)  # type: ignore[method-assign]
SecretsManagerBackend.rotate_secret = _version_dates_in_milliseconds(SecretsManagerBackend.rotate_secret)  # type: ignore[method-assign]
SecretsManagerBackend.list_secret_version_ids = _listed_version_dates(  # type: ignore[method-assign]
    SecretsManagerBackend.list_secret_version_ids
)
cfn_models.CloudFormationBackend._resolve_update_parameters = _resolve_update_parameters(  # type: ignore[method-assign]
    cfn_models.CloudFormationBackend._resolve_update_parameters
)
parsing.ResourceMap.build_resource_diff = _diff_with_dependents(  # type: ignore[method-assign]
    parsing.ResourceMap.build_resource_diff
)
cfn_models.CloudFormationBackend.execute_change_set = _execute_import(  # type: ignore[method-assign]
    cfn_models.CloudFormationBackend.execute_change_set
)
cfn_responses.CloudFormationResponse.create_change_set = _keep_resources_to_import(  # type: ignore[method-assign]
    cfn_responses.CloudFormationResponse.create_change_set
)
cfn_models.Stack.create_resources = _create_or_roll_back(cfn_models.Stack.create_resources)  # type: ignore[method-assign]
# The type map is cached on first use; make sure it is built after our subclasses exist.
parsing.get_model_list.cache_clear()
parsing.get_model_map.cache_clear()
parsing.get_name_type_map.cache_clear()
