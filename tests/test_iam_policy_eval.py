"""The test IAM evaluator (tests/iam_policy_eval.py) decides as the IAM User Guide says, and refuses what it lacks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.iam_policy_eval import Request, UnsupportedPolicy, allowed, decide, resolve


def _policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


ALLOW_BUCKET = {"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b-staging/*"}


def test_allow_needs_a_matching_action_and_resource() -> None:
    p = _policy(ALLOW_BUCKET)
    assert decide([p], Request("s3:GetObject", "arn:aws:s3:::b-staging/k")) == "Allow"
    assert decide([p], Request("S3:getobject", "arn:aws:s3:::b-staging/k")) == "Allow"  # actions: any case
    assert decide([p], Request("s3:PutObject", "arn:aws:s3:::b-staging/k")) == "ImplicitDeny"
    assert decide([p], Request("s3:GetObject", "arn:aws:s3:::b-production/k")) == "ImplicitDeny"
    assert decide([p], Request("s3:GetObject", "arn:aws:s3:::B-staging/k")) == "ImplicitDeny"  # resources: exact case


def test_question_mark_is_one_character() -> None:
    p = _policy({"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "arn:s:secret:x-??????"})
    assert decide([p], Request("secretsmanager:GetSecretValue", "arn:s:secret:x-abcdef")) == "Allow"
    assert decide([p], Request("secretsmanager:GetSecretValue", "arn:s:secret:x-abcdefg")) == "ImplicitDeny"


def test_explicit_deny_wins_over_any_allow() -> None:
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}
    assert decide([_policy(ALLOW_BUCKET), _policy(deny)], Request("s3:GetObject", "arn:aws:s3:::b-staging/k")) == "Deny"


def test_not_action() -> None:
    p = _policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    assert decide([p], Request("s3:GetObject", "x")) == "Allow"
    assert decide([p], Request("iam:CreateRole", "x")) == "ImplicitDeny"


def test_conditions_and_across_keys_or_across_values() -> None:
    p = _policy(
        {
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "ec2:CreateAction": ["ec2:CreateVpc", "ec2:CreateSubnet"],
                    "aws:RequestTag/environment": "staging",
                }
            },
        }
    )
    ok = {"ec2:CreateAction": "ec2:CreateSubnet", "aws:RequestTag/environment": "staging"}
    assert decide([p], Request("ec2:CreateTags", "r", ok)) == "Allow"
    assert (
        decide([p], Request("ec2:CreateTags", "r", {**ok, "aws:RequestTag/environment": "production"}))
        == "ImplicitDeny"
    )
    assert decide([p], Request("ec2:CreateTags", "r", {"aws:RequestTag/environment": "staging"})) == "ImplicitDeny"
    # Condition keys compare case-insensitively.
    assert (
        decide(
            [p],
            Request(
                "ec2:CreateTags", "r", {"EC2:createaction": "ec2:CreateVpc", "aws:requesttag/environment": "staging"}
            ),
        )
        == "Allow"
    )


def test_missing_keys_and_negated_operators() -> None:
    not_equals = _policy(
        {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": {"StringNotEquals": {"s3:ResourceAccount": "1"}},
        }
    )
    assert decide([not_equals], Request("s3:GetObject", "x")) == "Allow"
    assert decide([not_equals], Request("s3:GetObject", "x", {"s3:ResourceAccount": "1"})) == "ImplicitDeny"
    null = _policy(
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"Null": {"sts:ExternalId": "true"}}}
    )
    assert decide([null], Request("s3:GetObject", "x")) == "Allow"
    assert decide([null], Request("s3:GetObject", "x", {"sts:ExternalId": "e"})) == "ImplicitDeny"
    like = _policy(
        {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:*:role/a-*"}},
        }
    )
    assert decide([like], Request("s3:GetObject", "x", {"aws:PrincipalArn": "arn:aws:role/a-1"})) == "Allow"
    assert decide([like], Request("s3:GetObject", "x")) == "ImplicitDeny"


def test_boundary_must_allow_too() -> None:
    everything = _policy({"Effect": "Allow", "Action": "*", "Resource": "*"})
    request = Request("s3:GetObject", "arn:aws:s3:::b-production/k")
    assert allowed([everything], request)
    assert not allowed([everything], request, boundary=_policy(ALLOW_BUCKET))


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "Action": "s3:*", "NotResource": "x"},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Principal": "*"},
        {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": {"DateGreaterThan": {"aws:CurrentTime": "1"}},
        },
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"ForAnyValue:StringEquals": {"k": "v"}}},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"StringEqualsIfExists": {"k": "v"}}},
        {"Effect": "Allow", "Action": "s3:*", "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::b"}},
        {"Effect": "Maybe", "Action": "s3:*", "Resource": "*"},
    ],
)
def test_what_it_does_not_implement_raises(statement: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedPolicy):
        decide([_policy(statement)], Request("s3:GetObject", "x", {"k": "v"}))


def test_resolve_fills_in_sub_ref_and_if_and_refuses_the_unknown() -> None:
    refs = {"AWS::AccountId": "1", "Role.Arn": "arn:r"}
    value = {"A": {"Fn::Sub": "x-${AWS::AccountId}-${Role.Arn}"}, "B": {"Fn::If": ["C", {"Ref": "AWS::NoValue"}, 2]}}
    assert resolve(value, refs, {"C": True}) == {"A": "x-1-arn:r"}
    assert resolve(value, refs, {"C": False}) == {"A": "x-1-arn:r", "B": 2}
    with pytest.raises(UnsupportedPolicy):
        resolve({"Fn::Sub": "${Nope}"}, refs, {})
    with pytest.raises(UnsupportedPolicy):
        resolve({"Fn::GetAtt": ["R", "Arn"]}, refs, {})
