"""A small, strict evaluator of IAM identity policies for tests: explicit Deny wins, then an Allow is needed.

It implements only what this project's policies use and RAISES on anything else, so a policy growing an element or
condition operator it does not understand fails the tests instead of being misjudged. Semantics follow the IAM
User Guide, "Policy evaluation logic" and "IAM JSON policy elements: Condition operators": actions match
case-insensitively with * and ? wildcards, resources case-sensitively; several keys of one operator, and several
operators, must all match (AND); several values of one key match any (OR); a key missing from the request makes
StringEquals/StringLike/ArnLike false and StringNotEquals true (no IfExists variants here); Null tests presence.

A maintained evaluator (the npm package @cloud-copilot/iam-simulate, AGPL-3.0) would also check each ARN against the
resource types of its action; it was not added to keep the toolchain to what the app itself uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "Condition"}
OPERATORS = {"StringEquals", "StringNotEquals", "StringLike", "ArnLike", "Null"}


class UnsupportedPolicy(Exception):
    """The policy uses an element or operator this evaluator does not implement."""


@dataclass(frozen=True)
class Request:
    """One authorization: an action on a resource with the request's condition keys (values may be lists)."""

    action: str
    resource: str
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


def _values(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else [v]


def _wildcard(pattern: str, value: str, *, case_sensitive: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def _matches_action(statement: Mapping[str, Any], action: str) -> bool:
    if "Action" in statement and "NotAction" in statement:
        raise UnsupportedPolicy(f"statement {statement.get('Sid')!r} has both Action and NotAction")
    if "Action" in statement:
        return any(_wildcard(p, action, case_sensitive=False) for p in _values(statement["Action"]))
    if "NotAction" in statement:
        return not any(_wildcard(p, action, case_sensitive=False) for p in _values(statement["NotAction"]))
    raise UnsupportedPolicy(f"statement {statement.get('Sid')!r} has neither Action nor NotAction")


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    for operator, keys in condition.items():
        if operator not in OPERATORS:
            raise UnsupportedPolicy(f"condition operator {operator!r} is not implemented")
        for key, expected in keys.items():
            # Condition keys are case-insensitive; their values are not.
            actual_key = next((k for k in context if k.lower() == key.lower()), None)
            actual = _values(context[actual_key]) if actual_key is not None else []
            wanted = [str(v) for v in _values(expected)]
            if operator == "Null":
                if wanted not in (["true"], ["false"]):
                    raise UnsupportedPolicy(f"Null takes true or false, not {expected!r}")
                if (wanted == ["true"]) != (not actual):
                    return False
                continue
            if not actual:
                if operator == "StringNotEquals":
                    continue
                return False
            if len(actual) > 1:
                raise UnsupportedPolicy(f"multi-valued key {key!r} needs ForAnyValue/ForAllValues, not implemented")
            value = str(actual[0])
            if operator == "StringEquals":
                ok = value in wanted
            elif operator == "StringNotEquals":
                ok = value not in wanted
            else:  # StringLike, ArnLike
                ok = any(_wildcard(w, value, case_sensitive=True) for w in wanted)
            if not ok:
                return False
    return True


def _applies(statement: Mapping[str, Any], request: Request) -> bool:
    unknown = set(statement) - STATEMENT_KEYS
    if unknown:
        raise UnsupportedPolicy(f"statement {statement.get('Sid')!r}: elements {sorted(unknown)} not implemented")
    if "Resource" not in statement:
        raise UnsupportedPolicy(f"statement {statement.get('Sid')!r} has no Resource (NotResource not implemented)")
    for value in (*_values(statement["Resource"]), *_values(statement.get("Action", []))):
        if not isinstance(value, str):
            raise UnsupportedPolicy(f"statement {statement.get('Sid')!r} holds an unresolved value {value!r}")
    if not _matches_action(statement, request.action):
        return False
    if not any(_wildcard(p, request.resource, case_sensitive=True) for p in _values(statement["Resource"])):
        return False
    return _condition_holds(statement.get("Condition", {}), request.context)


def decide(policies: Iterable[Mapping[str, Any]], request: Request) -> str:
    """ "Allow", "Deny" (an explicit Deny) or "ImplicitDeny" for request under the union of the identity policies."""
    allowed = False
    for policy in policies:
        for statement in _values(policy["Statement"]):
            effect = statement.get("Effect")
            if effect not in ("Allow", "Deny"):
                raise UnsupportedPolicy(f"statement {statement.get('Sid')!r}: Effect {effect!r}")
            if _applies(statement, request):
                if effect == "Deny":
                    return "Deny"
                allowed = True
    return "Allow" if allowed else "ImplicitDeny"


def allowed(policies: Iterable[Mapping[str, Any]], request: Request, boundary: Mapping[str, Any] | None = None) -> bool:
    """True when the policies allow request and, if given, the permissions boundary allows it too."""
    if decide(policies, request) != "Allow":
        return False
    return boundary is None or decide([boundary], request) == "Allow"


_NO_VALUE = object()


def resolve(value: Any, refs: Mapping[str, str], conditions: Mapping[str, bool]) -> Any:
    """value (a piece of a CloudFormation template) with Ref, Fn::Sub and Fn::If resolved from refs (names and
    Resource.Attribute keys) and conditions; raises on any other intrinsic or an unknown name."""
    if isinstance(value, list):
        items = [resolve(v, refs, conditions) for v in value]
        return [v for v in items if v is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            if arg == "AWS::NoValue":
                return _NO_VALUE
            if arg not in refs:
                raise UnsupportedPolicy(f"Ref {arg!r} is not known to the test")
            return refs[arg]
        if key == "Fn::Sub":
            if not isinstance(arg, str):
                raise UnsupportedPolicy("Fn::Sub with a variable map is not implemented")

            def sub(m: re.Match[str]) -> str:
                if m.group(1) not in refs:
                    raise UnsupportedPolicy(f"Fn::Sub ${{{m.group(1)}}} is not known to the test")
                return refs[m.group(1)]

            return re.sub(r"\$\{([^}]+)\}", sub, arg)
        if key == "Fn::If":
            name, then, otherwise = arg
            if name not in conditions:
                raise UnsupportedPolicy(f"condition {name!r} is not known to the test")
            return resolve(then if conditions[name] else otherwise, refs, conditions)
        if key.startswith("Fn::"):
            raise UnsupportedPolicy(f"intrinsic {key} is not implemented")
    out = {k: resolve(v, refs, conditions) for k, v in value.items()}
    return {k: v for k, v in out.items() if v is not _NO_VALUE}
