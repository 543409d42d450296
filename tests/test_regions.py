"""The pinned region table (callsaver_infra/app/regions.py) is aws-cdk-lib's: same regions, same partitions."""

from __future__ import annotations

from aws_cdk.region_info import RegionInfo

from callsaver_infra.app.regions import REGION_PARTITIONS, partition


def test_table_equals_aws_cdk_libs() -> None:
    # After a CDK upgrade that adds a region this fails: copy the new rows into REGION_PARTITIONS.
    cdk = {r.name: r.partition for r in RegionInfo.regions}
    assert cdk == REGION_PARTITIONS


def test_unknown_region_is_in_the_aws_partition_as_in_aws_cdk_lib() -> None:
    assert RegionInfo.get("xx-nowhere-1").partition is None  # what the fallback stands in for
    assert partition("xx-nowhere-1") == "aws"
    assert partition("cn-north-1") == "aws-cn" and partition("us-gov-west-1") == "aws-us-gov"
