"""AWS regions and their ARN partitions, as a pinned table: config validation and ARNs need no Node (jsii).

A copy of aws-cdk-lib's offline region table (`aws_cdk.region_info.RegionInfo.regions`, aws-cdk-lib 2.275.0);
tests/test_regions.py fails when the pinned aws-cdk-lib's table differs, so a CDK upgrade updates it deliberately.
"""

from __future__ import annotations

# region -> ARN partition
REGION_PARTITIONS: dict[str, str] = {
    "af-south-1": "aws",
    "ap-east-1": "aws",
    "ap-east-2": "aws",
    "ap-northeast-1": "aws",
    "ap-northeast-2": "aws",
    "ap-northeast-3": "aws",
    "ap-south-1": "aws",
    "ap-south-2": "aws",
    "ap-southeast-1": "aws",
    "ap-southeast-2": "aws",
    "ap-southeast-3": "aws",
    "ap-southeast-4": "aws",
    "ap-southeast-5": "aws",
    "ap-southeast-6": "aws",
    "ap-southeast-7": "aws",
    "ca-central-1": "aws",
    "ca-west-1": "aws",
    "cn-north-1": "aws-cn",
    "cn-northwest-1": "aws-cn",
    "eu-central-1": "aws",
    "eu-central-2": "aws",
    "eu-isoe-west-1": "aws-iso-e",
    "eu-north-1": "aws",
    "eu-south-1": "aws",
    "eu-south-2": "aws",
    "eu-west-1": "aws",
    "eu-west-2": "aws",
    "eu-west-3": "aws",
    "eusc-de-east-1": "aws-eusc",
    "il-central-1": "aws",
    "me-central-1": "aws",
    "me-south-1": "aws",
    "mx-central-1": "aws",
    "sa-east-1": "aws",
    "us-east-1": "aws",
    "us-east-2": "aws",
    "us-gov-east-1": "aws-us-gov",
    "us-gov-west-1": "aws-us-gov",
    "us-iso-east-1": "aws-iso",
    "us-iso-west-1": "aws-iso",
    "us-isob-east-1": "aws-iso-b",
    "us-isob-west-1": "aws-iso-b",
    "us-isof-east-1": "aws-iso-f",
    "us-isof-south-1": "aws-iso-f",
    "us-west-1": "aws",
    "us-west-2": "aws",
}

KNOWN_REGIONS = frozenset(REGION_PARTITIONS)


def partition(region: str) -> str:
    """The ARN partition of a region (aws, aws-cn, aws-us-gov, ...); "aws" for a region not in the table, as
    aws-cdk-lib's RegionInfo answers."""
    return REGION_PARTITIONS.get(region, "aws")
