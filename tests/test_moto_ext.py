"""The moto CloudFormation extension used by the rehearsal: each resource type and property it adds is applied by a
real CloudFormation CreateStack on moto's server (127.0.0.1) and read back with the ordinary describe calls."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from callsaver_infra.dev.rehearsal import moto_ext  # registers the extension before the server starts
from callsaver_infra.dev.rehearsal.runner import not_emulated

REGION = "us-west-1"


@pytest.fixture(scope="module")
def aws(moto_endpoint: str) -> dict[str, Any]:
    return {
        "region_name": REGION,
        "endpoint_url": moto_endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


def _deploy(
    aws: dict[str, Any], name: str, resources: dict[str, Any], outputs: dict[str, Any] | None = None
) -> dict[str, str]:
    cfn = boto3.client("cloudformation", **aws)
    template = {"Resources": resources, "Outputs": outputs or {}}
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(template))
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def test_extension_is_pinned_to_the_moto_it_was_written_for() -> None:
    import moto

    assert moto.__version__ == moto_ext.MOTO_VERSION == "5.2.5"


def test_bucket_lifecycle_public_access_ownership_and_tls_policy(aws: dict[str, Any]) -> None:
    bucket = "ext-test-bucket"
    _deploy(
        aws,
        "ExtBucket",
        {
            "B": {
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "BucketName": bucket,
                    "LifecycleConfiguration": {
                        "Rules": [
                            {
                                "Id": "Expire",
                                "Status": "Enabled",
                                "ExpirationInDays": 7,
                                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                            }
                        ]
                    },
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                    "MetricsConfigurations": [{"Id": "Recordings", "Prefix": "calls/"}, {"Id": "EntireBucket"}],
                },
            },
            "P": {
                "Type": "AWS::S3::BucketPolicy",
                "Properties": {
                    "Bucket": {"Ref": "B"},
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Deny",
                                "Principal": {"AWS": "*"},
                                "Action": "s3:*",
                                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            },
                            {
                                "Effect": "Deny",
                                "Principal": {"AWS": "*"},
                                "Action": "s3:PutObject",
                                "Resource": f"arn:aws:s3:::{bucket}/blocked/*",
                            },
                        ],
                    },
                },
            },
        },
    )
    s3 = boto3.client("s3", **aws)
    rule = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]
    assert (rule["ID"], rule["Expiration"], rule["AbortIncompleteMultipartUpload"]) == (
        "Expire",
        {"Days": 7},
        {"DaysAfterInitiation": 1},
    )
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert len(json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]) == 2
    metrics = s3.get_bucket_metrics_configuration(Bucket=bucket, Id="Recordings")["MetricsConfiguration"]
    assert metrics == {"Id": "Recordings", "Filter": {"Prefix": "calls/"}}
    assert s3.get_bucket_metrics_configuration(Bucket=bucket, Id="EntireBucket")["MetricsConfiguration"] == {
        "Id": "EntireBucket"
    }
    listed = s3.list_bucket_metrics_configurations(Bucket=bucket)["MetricsConfigurationList"]
    assert [m["Id"] for m in listed] == ["Recordings", "EntireBucket"]
    with pytest.raises(ClientError, match="NoSuchConfiguration"):
        s3.get_bucket_metrics_configuration(Bucket=bucket, Id="Missing")
    # Conditional statements (the TLS-only Deny) are stored, not enforced; unconditional ones still are.
    s3.put_object(Bucket=bucket, Key="calls/a.ogg", Body=b"OggS")
    with pytest.raises(ClientError, match="403|AccessDenied|Forbidden"):
        s3.put_object(Bucket=bucket, Key="blocked/a.ogg", Body=b"OggS")


def test_secret_from_an_access_key_and_ref_is_the_arn(aws: dict[str, Any]) -> None:
    outputs = _deploy(
        aws,
        "ExtSecret",
        {
            "U": {"Type": "AWS::IAM::User", "Properties": {"UserName": "ext-user"}},
            "K": {"Type": "AWS::IAM::AccessKey", "Properties": {"UserName": {"Ref": "U"}}},
            "S": {
                "Type": "AWS::SecretsManager::Secret",
                "Properties": {
                    "Name": "ext/test/key",
                    "Description": "test",
                    "SecretString": {
                        "Fn::Join": [
                            "",
                            ['{"id":"', {"Ref": "K"}, '","secret":"', {"Fn::GetAtt": ["K", "SecretAccessKey"]}, '"}'],
                        ]
                    },
                },
            },
        },
        {"Arn": {"Value": {"Ref": "S"}}},
    )
    assert outputs["Arn"].startswith(f"arn:aws:secretsmanager:{REGION}:123456789012:secret:ext/test/key-")
    value = json.loads(boto3.client("secretsmanager", **aws).get_secret_value(SecretId="ext/test/key")["SecretString"])
    keys = boto3.client("iam", **aws).list_access_keys(UserName="ext-user")["AccessKeyMetadata"]
    assert value["id"] == keys[0]["AccessKeyId"] and len(value["secret"]) >= 20


def test_fargate_service_with_autoscaling_in_the_stacks_region(aws: dict[str, Any]) -> None:
    resources = {
        "Vpc": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.9.0.0/16"}},
        "Subnet": {
            "Type": "AWS::EC2::Subnet",
            "Properties": {
                "VpcId": {"Ref": "Vpc"},
                "CidrBlock": "10.9.0.0/24",
                "AvailabilityZone": {"Fn::Select": [1, {"Fn::GetAZs": ""}]},
            },
        },
        "Sg": {"Type": "AWS::EC2::SecurityGroup", "Properties": {"GroupDescription": "t", "VpcId": {"Ref": "Vpc"}}},
        "Cluster": {"Type": "AWS::ECS::Cluster", "Properties": {"ClusterName": "ext-cluster"}},
        "Task": {
            "Type": "AWS::ECS::TaskDefinition",
            "Properties": {
                "Family": "ext-task",
                "Cpu": "512",
                "Memory": "2048",
                "NetworkMode": "awsvpc",
                "RequiresCompatibilities": ["FARGATE"],
                "ExecutionRoleArn": "arn:aws:iam::123456789012:role/exec",
                "ContainerDefinitions": [{"Name": "a", "Image": "img:1", "StopTimeout": 120}],
            },
        },
        "Service": {
            "Type": "AWS::ECS::Service",
            "Properties": {
                "ServiceName": "ext-service",
                "Cluster": {"Ref": "Cluster"},
                "TaskDefinition": {"Ref": "Task"},
                "DesiredCount": 1,
                "LaunchType": "FARGATE",
                "DeploymentConfiguration": {
                    "MinimumHealthyPercent": 100,
                    "MaximumPercent": 200,
                    "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
                },
                "NetworkConfiguration": {
                    "AwsvpcConfiguration": {
                        "AssignPublicIp": "ENABLED",
                        "Subnets": [{"Ref": "Subnet"}],
                        "SecurityGroups": [{"Fn::GetAtt": ["Sg", "GroupId"]}],
                    }
                },
            },
        },
        "Target": {
            "Type": "AWS::ApplicationAutoScaling::ScalableTarget",
            "Properties": {
                "ServiceNamespace": "ecs",
                "ScalableDimension": "ecs:service:DesiredCount",
                "ResourceId": "service/ext-cluster/ext-service",
                "MinCapacity": 1,
                "MaxCapacity": 2,
                "RoleARN": "arn:aws:iam::123456789012:role/scaling",
            },
            "DependsOn": "Service",
        },
        "Policy": {
            "Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
            "Properties": {
                "PolicyName": "cpu",
                "PolicyType": "TargetTrackingScaling",
                "ScalingTargetId": {"Ref": "Target"},
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": 80,
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                },
            },
        },
    }
    _deploy(aws, "ExtAgent", resources)
    ecs, ec2 = boto3.client("ecs", **aws), boto3.client("ec2", **aws)
    service = ecs.describe_services(cluster="ext-cluster", services=["ext-service"])["services"][0]
    assert service["launchType"] == "FARGATE"
    assert service["deploymentConfiguration"] == {
        "minimumHealthyPercent": 100,
        "maximumPercent": 200,
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
    }
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert network["assignPublicIp"] == "ENABLED" and len(network["subnets"]) == 1
    task = ecs.describe_task_definition(taskDefinition="ext-task")["taskDefinition"]
    assert (task["cpu"], task["memory"], task["networkMode"], task["requiresCompatibilities"]) == (
        "512",
        "2048",
        "awsvpc",
        ["FARGATE"],
    )
    assert task["executionRoleArn"] == "arn:aws:iam::123456789012:role/exec"
    subnet = ec2.describe_subnets(SubnetIds=network["subnets"])["Subnets"][0]
    assert subnet["AvailabilityZone"] == f"{REGION}b"
    aas = boto3.client("application-autoscaling", **aws)
    target = aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in target] == [
        ("service/ext-cluster/ext-service", 1, 2)
    ]
    policies = aas.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"]
    assert [p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] for p in policies] == [80]


def test_properties_and_types_outside_the_extension_are_reported() -> None:
    templates = [
        {
            "Resources": {
                "B": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "x", "WebsiteConfiguration": {}}},
                "Q": {"Type": "AWS::SQS::Queue", "Properties": {}},
                "K": {"Type": "AWS::IAM::AccessKey", "Properties": {"UserName": "u", "Serial": 2, "Pgp": "x"}},
            }
        }
    ]
    assert not_emulated(templates) == [
        "AWS::IAM::AccessKey.Pgp",
        "AWS::S3::Bucket.WebsiteConfiguration",
        "AWS::SQS::Queue (whole resource)",
    ]


# -- updates, deletes, rollbacks -------------------------------------------------------------------------------


def _cfn(aws: dict[str, Any]) -> Any:
    return boto3.client("cloudformation", **aws)


def _create(aws: dict[str, Any], name: str, template: dict[str, Any]) -> dict[str, Any]:
    _cfn(aws).create_stack(StackName=name, TemplateBody=json.dumps(template))
    stack: dict[str, Any] = _cfn(aws).describe_stacks(StackName=name)["Stacks"][0]
    return stack


def _update(aws: dict[str, Any], name: str, template: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    _cfn(aws).update_stack(StackName=name, TemplateBody=json.dumps(template), **kwargs)
    stack: dict[str, Any] = _cfn(aws).describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE", stack
    return stack


def test_update_with_use_previous_value_of_a_defaulted_parameter(aws: dict[str, Any]) -> None:
    """The CDK CLI updates every stack with BootstrapVersion=UsePreviousValue; the create took its Default."""
    template: dict[str, Any] = {
        "Parameters": {"BootstrapVersion": {"Type": "String", "Default": "30"}},
        "Resources": {
            "S": {"Type": "AWS::SecretsManager::Secret", "Properties": {"Name": "ext/params", "SecretString": "a"}}
        },
    }
    assert _create(aws, "ExtParams", template)["StackStatus"] == "CREATE_COMPLETE"
    template["Resources"]["S"]["Properties"]["SecretString"] = "b"
    _update(aws, "ExtParams", template, Parameters=[{"ParameterKey": "BootstrapVersion", "UsePreviousValue": True}])
    sm = boto3.client("secretsmanager", **aws)
    assert sm.get_secret_value(SecretId="ext/params")["SecretString"] == "b"


def test_secret_update_keeps_an_operator_value_unless_the_template_value_changes(aws: dict[str, Any]) -> None:
    sm = boto3.client("secretsmanager", **aws)
    secret = {"Type": "AWS::SecretsManager::Secret", "Properties": {"Name": "ext/op", "SecretString": "placeholder"}}
    kept = {**secret, "Properties": {"Name": "ext/kept", "SecretString": "x"}, "DeletionPolicy": "Retain"}
    template: dict[str, Any] = {"Resources": {"S": secret, "K": kept}}
    _create(aws, "ExtSecretUpdate", template)
    sm.put_secret_value(SecretId="ext/op", SecretString="operator-fake-value")
    secret["Properties"]["Description"] = "now described"
    _update(aws, "ExtSecretUpdate", template)
    assert sm.get_secret_value(SecretId="ext/op")["SecretString"] == "operator-fake-value"
    assert sm.describe_secret(SecretId="ext/op")["Description"] == "now described"
    secret["Properties"]["SecretString"] = "new template value"
    _update(aws, "ExtSecretUpdate", template)
    assert sm.get_secret_value(SecretId="ext/op")["SecretString"] == "new template value"
    _cfn(aws).delete_stack(StackName="ExtSecretUpdate")
    names = {s["Name"] for s in sm.list_secrets()["SecretList"]}
    assert "ext/op" not in names and "ext/kept" in names  # deleted, except the one with DeletionPolicy Retain


def test_task_definition_and_service_update_and_delete(aws: dict[str, Any]) -> None:
    container = {"Name": "agent", "Image": "repo:one", "Essential": True}
    template: dict[str, Any] = {
        "Resources": {
            "Cluster": {"Type": "AWS::ECS::Cluster", "Properties": {"ClusterName": "ext-upd"}},
            "Task": {
                "Type": "AWS::ECS::TaskDefinition",
                "Properties": {
                    "Family": "ext-upd-task",
                    "ContainerDefinitions": [container],
                    "Cpu": "512",
                    "Memory": "2048",
                },
            },
            "Service": {
                "Type": "AWS::ECS::Service",
                "Properties": {
                    "ServiceName": "ext-upd-svc",
                    "Cluster": {"Ref": "Cluster"},
                    "TaskDefinition": {"Ref": "Task"},
                    "DesiredCount": 1,
                },
            },
        }
    }
    _create(aws, "ExtEcsUpdate", template)
    ecs = boto3.client("ecs", **aws)
    container["Image"] = "repo:two"
    template["Resources"]["Service"]["Properties"]["DesiredCount"] = 2
    _update(aws, "ExtEcsUpdate", template)
    service = ecs.describe_services(cluster="ext-upd", services=["ext-upd-svc"])["services"][0]
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    assert (task["revision"], task["containerDefinitions"][0]["image"], service["desiredCount"]) == (2, "repo:two", 2)
    old = ecs.describe_task_definition(taskDefinition="ext-upd-task:1")["taskDefinition"]
    assert old["status"] == "INACTIVE"  # the replaced revision is deregistered
    _cfn(aws).delete_stack(StackName="ExtEcsUpdate")
    gone = ecs.describe_services(cluster="ext-upd", services=["ext-upd-svc"])
    assert [s["status"] for s in gone["services"]] in ([], ["INACTIVE"])
    assert ecs.describe_task_definition(taskDefinition="ext-upd-task:2")["taskDefinition"]["status"] == "INACTIVE"


def test_bucket_policy_update_and_delete_with_retain(aws: dict[str, Any]) -> None:
    s3 = boto3.client("s3", **aws)
    statement = {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteBucket", "Resource": "arn:aws:s3:::ext-pol"}
    policy = {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {"Bucket": {"Ref": "B"}, "PolicyDocument": {"Version": "2012-10-17", "Statement": [statement]}},
        "DeletionPolicy": "Retain",
    }
    bucket = {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "ext-pol"}, "DeletionPolicy": "Retain"}
    template = {"Resources": {"B": bucket, "P": policy}}
    _create(aws, "ExtPolicy", template)
    statement["Sid"] = "Updated"
    _update(aws, "ExtPolicy", template)
    assert json.loads(s3.get_bucket_policy(Bucket="ext-pol")["Policy"])["Statement"][0]["Sid"] == "Updated"
    _cfn(aws).delete_stack(StackName="ExtPolicy")
    # Retained: the bucket and its policy outlive the stack.
    assert json.loads(s3.get_bucket_policy(Bucket="ext-pol")["Policy"])["Statement"][0]["Sid"] == "Updated"
    # Without Retain, the stack deletion removes the policy (the retained bucket stays).
    del policy["DeletionPolicy"]
    s3.delete_bucket_policy(Bucket="ext-pol")
    _create(
        aws, "ExtPolicy2", {"Resources": {"P": {**policy, "Properties": {**policy["Properties"], "Bucket": "ext-pol"}}}}
    )
    _cfn(aws).delete_stack(StackName="ExtPolicy2")
    with pytest.raises(ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket="ext-pol")


def test_access_key_serial_replaces_the_key_and_update_replace_policy_retain_keeps_the_old_one(
    aws: dict[str, Any],
) -> None:
    iam = boto3.client("iam", **aws)
    key: dict[str, Any] = {
        "Type": "AWS::IAM::AccessKey",
        "Properties": {"UserName": {"Ref": "U"}, "Serial": 1},
        "UpdateReplacePolicy": "Retain",
    }
    template = {
        "Resources": {"U": {"Type": "AWS::IAM::User", "Properties": {"UserName": "ext-key-user"}}, "K": key},
        "Outputs": {"Id": {"Value": {"Ref": "K"}}},
    }
    first = _create(aws, "ExtKey", template)["Outputs"][0]["OutputValue"]
    key["Properties"]["Status"] = "Active"  # a change that is not a replacement keeps the key
    same = _update(aws, "ExtKey", template)["Outputs"][0]["OutputValue"]
    assert same == first
    key["Properties"]["Serial"] = 2
    second = _update(aws, "ExtKey", template)["Outputs"][0]["OutputValue"]
    listed = iam.list_access_keys(UserName="ext-key-user")["AccessKeyMetadata"]
    assert second != first and sorted(k["AccessKeyId"] for k in listed) == sorted([first, second])
    iam.delete_access_key(UserName="ext-key-user", AccessKeyId=first)
    del key["UpdateReplacePolicy"]  # without Retain the replaced key is deleted in the same update
    key["Properties"]["Serial"] = 3
    third = _update(aws, "ExtKey", template)["Outputs"][0]["OutputValue"]
    listed = iam.list_access_keys(UserName="ext-key-user")["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [third]


def test_failed_create_rolls_back_and_describe_stacks_still_answers(aws: dict[str, Any]) -> None:
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket="ext-taken", CreateBucketConfiguration={"LocationConstraint": REGION})
    template = {
        "Resources": {
            "G": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "ext-rollback"}},
            "B": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "ext-taken"}, "DependsOn": "G"},
        },
        "Outputs": {"Name": {"Value": {"Ref": "B"}}},
    }
    stack = _create(aws, "ExtRollback", template)
    assert stack["StackStatus"] == "ROLLBACK_COMPLETE"
    assert "Outputs" not in stack
    events = _cfn(aws).describe_stack_events(StackName="ExtRollback")["StackEvents"]
    reasons = [e.get("ResourceStatusReason", "") for e in events if e["ResourceStatus"] == "ROLLBACK_IN_PROGRESS"]
    assert len(reasons) == 1 and "Bucket" in reasons[0], events
    # What the failed create made is gone again, and the stack can be deleted and created anew.
    assert boto3.client("logs", **aws).describe_log_groups(logGroupNamePrefix="ext-rollback")["logGroups"] == []
    _cfn(aws).delete_stack(StackName="ExtRollback")


def test_a_resource_taking_a_replaced_resources_ref_is_updated_too(aws: dict[str, Any]) -> None:
    """The egress secret holds Ref(AccessKey): when the key is replaced, CloudFormation rewrites the secret."""
    key: dict[str, Any] = {"Type": "AWS::IAM::AccessKey", "Properties": {"UserName": {"Ref": "U"}, "Serial": 1}}
    secret = {
        "Type": "AWS::SecretsManager::Secret",
        "Properties": {"Name": "ext/key-holder", "SecretString": {"Fn::Join": ["", ['{"id":"', {"Ref": "K"}, '"}']]}},
    }
    template = {
        "Resources": {
            "U": {"Type": "AWS::IAM::User", "Properties": {"UserName": "ext-ref-user"}},
            "K": key,
            "S": secret,
        }
    }
    _create(aws, "ExtRef", template)
    key["Properties"]["Serial"] = 2
    _update(aws, "ExtRef", template)
    [current] = boto3.client("iam", **aws).list_access_keys(UserName="ext-ref-user")["AccessKeyMetadata"]
    stored = boto3.client("secretsmanager", **aws).get_secret_value(SecretId="ext/key-holder")["SecretString"]
    assert json.loads(stored) == {"id": current["AccessKeyId"]}


def test_vpc_with_route_tables_can_be_deleted(aws: dict[str, Any]) -> None:
    template = {
        "Resources": {
            "V": {"Type": "AWS::EC2::VPC", "Properties": {"CidrBlock": "10.9.0.0/16"}},
            "S": {"Type": "AWS::EC2::Subnet", "Properties": {"VpcId": {"Ref": "V"}, "CidrBlock": "10.9.0.0/24"}},
            "R": {"Type": "AWS::EC2::RouteTable", "Properties": {"VpcId": {"Ref": "V"}}},
            "A": {
                "Type": "AWS::EC2::SubnetRouteTableAssociation",
                "Properties": {"RouteTableId": {"Ref": "R"}, "SubnetId": {"Ref": "S"}},
            },
        },
        "Outputs": {"Vpc": {"Value": {"Ref": "V"}}},
    }
    vpc = _create(aws, "ExtVpc", template)["Outputs"][0]["OutputValue"]
    _cfn(aws).delete_stack(StackName="ExtVpc")
    assert boto3.client("ec2", **aws).describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Vpcs"] == []


def test_ecr_repository_with_lifecycle_policy_scan_encryption_and_immutable_tags(aws: dict[str, Any]) -> None:
    """The properties Callsaver-Registry sets, in the shapes CloudFormation takes them, read back through ECR's API;
    an immutable tag then refuses a second push, as ECR does."""
    lifecycle = {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 1,
                              "countUnit": "days"},
                "action": {"type": "expire"},
            }
        ]
    }  # fmt: skip
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PushFromAgentCi",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::210987654321:role/callsaver-agent-ci"},
                "Action": ["ecr:PutImage"],
            }
        ],
    }
    outputs = _deploy(
        aws,
        "ExtRegistry",
        {
            "R": {
                "Type": "AWS::ECR::Repository",
                "Properties": {
                    "RepositoryName": "ext-agent",
                    "ImageTagMutability": "IMMUTABLE",
                    "ImageScanningConfiguration": {"ScanOnPush": True},
                    "EncryptionConfiguration": {"EncryptionType": "AES256"},
                    "LifecyclePolicy": {"LifecyclePolicyText": json.dumps(lifecycle)},
                    "RepositoryPolicyText": policy,
                },
            }
        },
        {"Arn": {"Value": {"Fn::GetAtt": ["R", "Arn"]}}, "Name": {"Value": {"Ref": "R"}}},
    )
    assert outputs == {"Arn": "arn:aws:ecr:us-west-1:123456789012:repository/ext-agent", "Name": "ext-agent"}
    ecr = boto3.client("ecr", **aws)
    (repository,) = ecr.describe_repositories(repositoryNames=["ext-agent"])["repositories"]
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert json.loads(ecr.get_lifecycle_policy(repositoryName="ext-agent")["lifecyclePolicyText"]) == lifecycle
    assert json.loads(ecr.get_repository_policy(repositoryName="ext-agent")["policyText"]) == policy
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                                      "digest": "sha256:" + "1" * 64}, "layers": []})  # fmt: skip
    ecr.put_image(repositoryName="ext-agent", imageManifest=manifest, imageTag="v1.0.0")
    with pytest.raises(ClientError, match="ImageAlreadyExists|ImageTagAlreadyExists"):
        ecr.put_image(repositoryName="ext-agent", imageManifest=manifest.replace('"1', '"2'), imageTag="v1.0.0")


def test_alarms_topic_policy_and_alarm_notifications_reach_a_subscribed_queue(aws: dict[str, Any]) -> None:
    """An alarm created by CreateStack publishes CloudWatch's notification to its topic when SetAlarmState changes
    its state (and only then); the topic policy is stored; a math alarm keeps its metrics."""
    topic_name = "ext-alerts"
    outputs = _deploy(
        aws,
        "ExtMonitoring",
        {
            "Key": {
                "Type": "AWS::KMS::Key",
                "Properties": {
                    "EnableKeyRotation": True,
                    "Tags": [{"Key": "project", "Value": "callsaver"}],
                    "KeyPolicy": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}
                        ],
                    },
                },
            },
            "Alias": {
                "Type": "AWS::KMS::Alias",
                "Properties": {"AliasName": "alias/ext-alerts", "TargetKeyId": {"Fn::GetAtt": ["Key", "Arn"]}},
            },
            "Topic": {
                "Type": "AWS::SNS::Topic",
                "Properties": {"TopicName": topic_name, "KmsMasterKeyId": {"Fn::GetAtt": ["Key", "Arn"]}},
            },
            "Policy": {
                "Type": "AWS::SNS::TopicPolicy",
                "Properties": {
                    "Topics": [{"Ref": "Topic"}],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "Alarms",
                                "Effect": "Allow",
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                "Action": "sns:Publish",
                                "Resource": {"Ref": "Topic"},
                            }
                        ],
                    },
                },
            },
            "Down": {
                "Type": "AWS::CloudWatch::Alarm",
                "Properties": {
                    "AlarmName": "ext-down",
                    "AlarmDescription": "check first: the service",
                    "Namespace": "ECS/ContainerInsights",
                    "MetricName": "RunningTaskCount",
                    "Dimensions": [{"Name": "ClusterName", "Value": "c"}, {"Name": "ServiceName", "Value": "s"}],
                    "Statistic": "Minimum",
                    "Period": 60,
                    "EvaluationPeriods": 3,
                    "DatapointsToAlarm": 3,
                    "Threshold": 1,
                    "ComparisonOperator": "LessThanThreshold",
                    "TreatMissingData": "breaching",
                    "AlarmActions": [{"Ref": "Topic"}],
                    "OKActions": [{"Ref": "Topic"}],
                },
            },
            "Saturated": {
                "Type": "AWS::CloudWatch::Alarm",
                "Properties": {
                    "AlarmName": "ext-saturated",
                    "EvaluationPeriods": 10,
                    "Threshold": 1,
                    "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                    "TreatMissingData": "notBreaching",
                    "AlarmActions": [{"Ref": "Topic"}],
                    "Metrics": [
                        {"Id": "e", "Expression": "IF(t >= 2, 1, 0)", "ReturnData": True},
                        {
                            "Id": "t",
                            "ReturnData": False,
                            "MetricStat": {
                                "Metric": {"Namespace": "ECS/ContainerInsights", "MetricName": "RunningTaskCount"},
                                "Period": 60,
                                "Stat": "Minimum",
                            },
                        },
                    ],
                },
            },
            "Dashboard": {
                "Type": "AWS::CloudWatch::Dashboard",
                "Properties": {"DashboardName": "ext-dashboard", "DashboardBody": '{"widgets":[]}'},
            },
        },
        {"DownArn": {"Value": {"Fn::GetAtt": ["Down", "Arn"]}}, "DownRef": {"Value": {"Ref": "Down"}}},
    )
    assert outputs == {"DownArn": f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:ext-down", "DownRef": "ext-down"}
    sns, sqs, cw = boto3.client("sns", **aws), boto3.client("sqs", **aws), boto3.client("cloudwatch", **aws)
    topic_arn = f"arn:aws:sns:{REGION}:123456789012:{topic_name}"
    attributes = sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    assert [s["Sid"] for s in json.loads(attributes["Policy"])["Statement"]] == ["Alarms"]
    assert attributes["KmsMasterKeyId"].startswith(f"arn:aws:kms:{REGION}:123456789012:key/")
    kms = boto3.client("kms", **aws)
    key_id = kms.describe_key(KeyId="alias/ext-alerts")["KeyMetadata"]["KeyId"]
    assert attributes["KmsMasterKeyId"].endswith(key_id)
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "project", "TagValue": "callsaver"}]
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
    down = alarms["ext-down"]
    assert (down["MetricName"], down["Statistic"], down["Period"], down["EvaluationPeriods"]) == (
        "RunningTaskCount", "Minimum", 60, 3,
    )  # fmt: skip
    assert (down["TreatMissingData"], down["AlarmActions"], down["OKActions"]) == (
        "breaching",
        [topic_arn],
        [topic_arn],
    )
    saturated = alarms["ext-saturated"]
    assert [m["Id"] for m in saturated["Metrics"]] == ["e", "t"]
    assert saturated["Metrics"][1]["MetricStat"]["Metric"]["MetricName"] == "RunningTaskCount"
    assert cw.list_dashboards()["DashboardEntries"][0]["DashboardName"] == "ext-dashboard"

    queue_url = sqs.create_queue(QueueName="ext-alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    cw.set_alarm_state(AlarmName="ext-down", StateValue="ALARM", StateReason="rehearsal: 0 tasks")
    cw.set_alarm_state(AlarmName="ext-down", StateValue="ALARM", StateReason="still down")  # no change: no message
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    assert {k: body[k] for k in ("AlarmName", "NewStateValue", "OldStateValue", "NewStateReason", "AWSAccountId")} == {
        "AlarmName": "ext-down",
        "NewStateValue": "ALARM",
        "OldStateValue": "OK",
        "NewStateReason": "rehearsal: 0 tasks",
        "AWSAccountId": "123456789012",
    }
    assert body["Region"] == "US West (N. California)" and body["AlarmDescription"] == "check first: the service"
    assert body["Trigger"]["MetricName"] == "RunningTaskCount"


def test_rule_delivers_matching_events_to_an_sns_topic_through_its_input_transformer(aws: dict[str, Any]) -> None:
    service_arn = f"arn:aws:ecs:{REGION}:123456789012:service/ext-cluster/ext-svc"
    _deploy(
        aws,
        "ExtRule",
        {
            "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "ext-rule-alerts"}},
            "Rule": {
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "Name": "ext-deploy-failed",
                    "State": "ENABLED",
                    "EventPattern": {
                        "source": ["aws.ecs"],
                        "detail-type": ["ECS Deployment State Change"],
                        "resources": [service_arn],
                        "detail": {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]},
                    },
                    "Targets": [
                        {
                            "Arn": {"Ref": "Topic"},
                            "Id": "Target0",
                            "InputTransformer": {
                                "InputPathsMap": {"d": "$.detail.deploymentId", "s": "$.resources[0]"},
                                "InputTemplate": '"deployment <d> of <s> failed"',
                            },
                        }
                    ],
                },
            },
        },
    )
    sns, sqs, events = boto3.client("sns", **aws), boto3.client("sqs", **aws), boto3.client("events", **aws)
    queue_url = sqs.create_queue(QueueName="ext-rule-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic_arn = f"arn:aws:sns:{REGION}:123456789012:ext-rule-alerts"
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    for name, resource in (
        ("SERVICE_DEPLOYMENT_FAILED", service_arn),
        ("SERVICE_DEPLOYMENT_COMPLETED", service_arn),  # other event: no message
        ("SERVICE_DEPLOYMENT_FAILED", service_arn + "-other"),  # other service: no message
    ):
        detail = json.dumps({"eventName": name, "deploymentId": "ecs-svc/42"})
        events.put_events(
            Entries=[
                {
                    "Source": "aws.ecs",
                    "DetailType": "ECS Deployment State Change",
                    "Resources": [resource],
                    "Detail": detail,
                }
            ]
        )
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert [m["Body"] for m in messages] == [f"deployment ecs-svc/42 of {service_arn} failed"]


def test_bucket_versioning_bucket_key_and_noncurrent_expiry(aws: dict[str, Any]) -> None:
    bucket = "ext-test-versioned"
    _deploy(
        aws,
        "ExtVersioned",
        {
            "K": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": {"Version": "2012-10-17", "Statement": []}}},
            "B": {
                "Type": "AWS::S3::Bucket",
                "Properties": {
                    "BucketName": bucket,
                    "VersioningConfiguration": {"Status": "Enabled"},
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {
                                "ServerSideEncryptionByDefault": {
                                    "SSEAlgorithm": "aws:kms",
                                    "KMSMasterKeyID": {"Fn::GetAtt": ["K", "Arn"]},
                                },
                                "BucketKeyEnabled": True,
                            }
                        ]
                    },
                    "LifecycleConfiguration": {
                        "Rules": [
                            {
                                "Id": "Expire",
                                "Status": "Enabled",
                                "ExpirationInDays": 30,
                                "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                            },
                            {"Id": "Markers", "Status": "Enabled", "ExpiredObjectDeleteMarker": True},
                        ]
                    },
                },
            },
        },
    )
    s3 = boto3.client("s3", **aws)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert rule["BucketKeyEnabled"] is True
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["Expire"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    assert rules["Markers"]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    # Objects take the bucket's defaults: SSE-KMS with the bucket key, and a version id on every write.
    first = s3.put_object(Bucket=bucket, Key="a.ogg", Body=b"1")
    second = s3.put_object(Bucket=bucket, Key="a.ogg", Body=b"2")
    assert (second["ServerSideEncryption"], second["BucketKeyEnabled"]) == ("aws:kms", True)
    assert first["VersionId"] != second["VersionId"]


def test_kms_key_with_cloudformation_tags_policy_and_rotation(aws: dict[str, Any]) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
    outputs = _deploy(
        aws,
        "ExtKmsKey",
        {
            "K": {
                "Type": "AWS::KMS::Key",
                "Properties": {
                    "KeyPolicy": policy,
                    "Description": "ext test key",
                    "EnableKeyRotation": True,
                    "Tags": [{"Key": "environment", "Value": "local"}],
                },
            },
            "A": {
                "Type": "AWS::KMS::Alias",
                "Properties": {"AliasName": "alias/ext/test", "TargetKeyId": {"Fn::GetAtt": ["K", "Arn"]}},
            },
        },
        {"Arn": {"Value": {"Fn::GetAtt": ["K", "Arn"]}}},
    )
    kms = boto3.client("kms", **aws)
    key = kms.describe_key(KeyId="alias/ext/test")["KeyMetadata"]
    assert (key["Arn"], key["Description"]) == (outputs["Arn"], "ext test key")
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    assert json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"]) == policy
    assert kms.list_resource_tags(KeyId=key["KeyId"])["Tags"] == [{"TagKey": "environment", "TagValue": "local"}]


def test_secret_resource_policy(aws: dict[str, Any]) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {"ArnNotLike": {"aws:PrincipalArn": ["arn:aws:iam::123456789012:role/reader"]}},
            }
        ],
    }
    _deploy(
        aws,
        "ExtSecretPolicy",
        {
            "S": {"Type": "AWS::SecretsManager::Secret", "Properties": {"Name": "ext/policy", "SecretString": "x"}},
            "P": {
                "Type": "AWS::SecretsManager::ResourcePolicy",
                "Properties": {"SecretId": {"Ref": "S"}, "ResourcePolicy": policy},
            },
        },
    )
    stored = boto3.client("secretsmanager", **aws).get_resource_policy(SecretId="ext/policy")
    assert json.loads(stored["ResourcePolicy"]) == policy


def _enforce_iam(endpoint: str, on: bool) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0" if on else b"inf", method="POST",
        headers={"Content-Type": "text/plain"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (the local endpoint)
        response.read()


def test_account_principal_in_a_trust_policy_delegates_to_the_callers_iam_policy(
    aws: dict[str, Any], moto_endpoint: str
) -> None:
    """AWS: a trust policy naming arn:aws:iam::<account>:root lets any principal of that account assume the role if
    its own policy allows sts:AssumeRole on it; a principal without that grant is refused."""
    iam = boto3.client("iam", **aws)
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}
    ]}  # fmt: skip
    role_arn = iam.create_role(RoleName="ext-account-trust", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    keys = {}
    for user, allowed in (("ext-allowed", True), ("ext-not-allowed", False)):
        iam.create_user(UserName=user)
        if allowed:
            iam.put_user_policy(UserName=user, PolicyName="Assume", PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}],
            }))  # fmt: skip
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = {**aws, "aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    _enforce_iam(moto_endpoint, True)
    try:
        assumed = boto3.client("sts", **keys["ext-allowed"]).assume_role(RoleArn=role_arn, RoleSessionName="probe")
        assert assumed["AssumedRoleUser"]["Arn"].startswith("arn:aws:sts::123456789012:assumed-role/ext-account-trust/")
        with pytest.raises(ClientError, match="AccessDenied"):
            boto3.client("sts", **keys["ext-not-allowed"]).assume_role(RoleArn=role_arn, RoleSessionName="probe")
    finally:
        _enforce_iam(moto_endpoint, False)


def test_role_holds_the_managed_policies_of_managed_policy_arns(aws: dict[str, Any]) -> None:
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}
    ]}  # fmt: skip
    _deploy(
        aws,
        "ExtRoleManaged",
        {
            "P": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {"ManagedPolicyName": "ext-reader", "PolicyDocument": document},
            },
            "R": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": "ext-reader",
                    "AssumeRolePolicyDocument": trust,
                    "ManagedPolicyArns": [{"Ref": "P"}],
                    "MaxSessionDuration": 3600,
                },
            },
        },
    )
    attached = boto3.client("iam", **aws).list_attached_role_policies(RoleName="ext-reader")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == ["arn:aws:iam::123456789012:policy/ext-reader"]


def test_stack_and_parameter_calls_are_authorized_against_their_arns(aws: dict[str, Any], moto_endpoint: str) -> None:
    """AWS authorizes DescribeStacks/GetTemplate against the stack's ARN and GetParameter against the parameter's;
    moto checked "*". A policy scoped like CI's diff role must allow its stacks and refuse others."""
    for stack in ("ExtAllowedStack", "ExtOtherStack"):
        _deploy(aws, stack, {"W": {"Type": "AWS::IAM::User", "Properties": {"UserName": f"{stack}-user"}}})
    boto3.client("ssm", **aws).put_parameter(Name="/ext/allowed", Value="1", Type="String")
    boto3.client("ssm", **aws).put_parameter(Name="/ext/other", Value="2", Type="String")
    iam = boto3.client("iam", **aws)
    iam.create_user(UserName="ext-differ")
    iam.put_user_policy(UserName="ext-differ", PolicyName="Read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["cloudformation:DescribeStacks", "cloudformation:GetTemplate"],
             "Resource": "arn:aws:cloudformation:us-west-1:123456789012:stack/ExtAllowedStack/*"},
            {"Effect": "Allow", "Action": "ssm:GetParameter",
             "Resource": "arn:aws:ssm:us-west-1:123456789012:parameter/ext/allowed"},
        ],
    }))  # fmt: skip
    key = iam.create_access_key(UserName="ext-differ")["AccessKey"]
    creds = {**aws, "aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
    cfn, ssm = boto3.client("cloudformation", **creds), boto3.client("ssm", **creds)
    _enforce_iam(moto_endpoint, True)
    try:
        assert cfn.describe_stacks(StackName="ExtAllowedStack")["Stacks"][0]["StackName"] == "ExtAllowedStack"
        assert "W" in json.dumps(cfn.get_template(StackName="ExtAllowedStack")["TemplateBody"])
        assert ssm.get_parameter(Name="/ext/allowed")["Parameter"]["Value"] == "1"
        for call in (
            lambda: cfn.describe_stacks(StackName="ExtOtherStack"),
            lambda: cfn.get_template(StackName="ExtOtherStack"),
            lambda: cfn.describe_stacks(),
            lambda: ssm.get_parameter(Name="/ext/other"),
        ):
            with pytest.raises(ClientError, match="AccessDenied|not authorized"):
                call()
    finally:
        _enforce_iam(moto_endpoint, False)


def _stack_statuses(aws: dict[str, Any], name: str) -> list[str]:
    return [s["StackStatus"] for s in _cfn(aws).list_stacks()["StackSummaries"] if s["StackName"] == name]


def test_inline_policy_deletion_tolerates_a_role_that_no_longer_holds_it(aws: dict[str, Any]) -> None:
    """CloudFormation deletes an AWS::IAM::Policy whose role already lost it (stock moto raised NoSuchEntity on every
    pass and the stack was never deleted); the role's other inline policies stay."""
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]}  # fmt: skip
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    _deploy(
        aws,
        "ExtInlineRole",
        {"R": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "ext-inline", "AssumeRolePolicyDocument": trust}}},
    )
    policy = {"PolicyName": "ext-inline-default", "PolicyDocument": document, "Roles": ["ext-inline"]}
    _deploy(aws, "ExtInlinePolicy", {"P": {"Type": "AWS::IAM::Policy", "Properties": policy}})
    iam = boto3.client("iam", **aws)
    iam.put_role_policy(RoleName="ext-inline", PolicyName="ext-inline-other", PolicyDocument=json.dumps(document))
    assert sorted(iam.list_role_policies(RoleName="ext-inline")["PolicyNames"]) == [
        "ext-inline-default",
        "ext-inline-other",
    ]
    iam.delete_role_policy(RoleName="ext-inline", PolicyName="ext-inline-default")
    _cfn(aws).delete_stack(StackName="ExtInlinePolicy")
    assert _stack_statuses(aws, "ExtInlinePolicy") == ["DELETE_COMPLETE"]
    assert iam.list_role_policies(RoleName="ext-inline")["PolicyNames"] == ["ext-inline-other"]


def test_role_deletion_beside_an_inline_policy_for_users_only(aws: dict[str, Any]) -> None:
    """A role is deleted with its stack while an AWS::IAM::Policy naming only users (no Roles) exists: stock moto
    raised TypeError iterating that policy's missing role list, and the role's stack was never deleted."""
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]}  # fmt: skip
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    _deploy(
        aws,
        "ExtUserPolicy",
        {
            "U": {"Type": "AWS::IAM::User", "Properties": {"UserName": "ext-policy-user"}},
            "P": {
                "Type": "AWS::IAM::Policy",
                "Properties": {"PolicyName": "ext-user-only", "PolicyDocument": document, "Users": [{"Ref": "U"}]},
            },
        },
    )
    _deploy(
        aws,
        "ExtRoleBeside",
        {"R": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "ext-beside", "AssumeRolePolicyDocument": trust}}},
    )
    _cfn(aws).delete_stack(StackName="ExtRoleBeside")
    assert _stack_statuses(aws, "ExtRoleBeside") == ["DELETE_COMPLETE"]
    iam = boto3.client("iam", **aws)
    with pytest.raises(ClientError, match="NoSuchEntity"):
        iam.get_role(RoleName="ext-beside")
    # The users' policy is untouched.
    assert iam.list_user_policies(UserName="ext-policy-user")["PolicyNames"] == ["ext-user-only"]


def test_secret_versions_are_dated_by_their_write_to_the_millisecond(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ListSecretVersionIds dates a version by its write, not by the listing, in milliseconds like an ECS deployment:
    rotate-egress-key orders the two (a deployment older than the egress secret's version still holds the old key).
    Stock moto's own clock is moved a day ahead (the server runs in this process), so a date taken at listing time
    shows; the test keeps clear of a second's boundary, so whole-second dates cannot order the writes by luck."""
    from moto.secretsmanager import models as stock

    sm, ecs = boto3.client("secretsmanager", **aws), boto3.client("ecs", **aws)
    while not 0.01 < time.time() % 1 < 0.8:
        time.sleep(0.01)
    created = sm.create_secret(Name="ext/dated", SecretString="one")
    ecs.create_cluster(clusterName="ext-dated")
    task = ecs.register_task_definition(
        family="ext-dated", containerDefinitions=[{"name": "c", "image": "x", "memory": 512}]
    )
    ecs.create_service(
        cluster="ext-dated",
        serviceName="svc",
        taskDefinition=task["taskDefinition"]["taskDefinitionArn"],
        desiredCount=1,
    )
    deployed = ecs.describe_services(cluster="ext-dated", services=["svc"])["services"][0]["deployments"][0][
        "createdAt"
    ]
    time.sleep(0.002)  # the next write is at least a millisecond later than the deployment, as dated
    second = sm.put_secret_value(SecretId=created["ARN"], SecretString="two")
    monkeypatch.setattr(stock, "time", SimpleNamespace(time=lambda: time.time() + 86400))
    listed = {v["VersionId"]: v["CreatedDate"] for v in sm.list_secret_version_ids(SecretId=created["ARN"])["Versions"]}
    assert listed[created["VersionId"]] <= deployed < listed[second["VersionId"]], (listed, deployed)
    for version_id, date in listed.items():
        assert sm.get_secret_value(SecretId=created["ARN"], VersionId=version_id)["CreatedDate"] == date
