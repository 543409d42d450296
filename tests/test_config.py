"""Config validation: every bad input fails before any construct is built, naming file, key, value and fix."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from callsaver_infra.app.config import (
    ConfigError,
    bucket_name_problem,
    load_environment,
    load_environments,
    select_environments,
)
from tests.helpers import CONFIG_DIR, ENV_NAMES, STAGING, staging_with, write_toml


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_environment(path)
    return str(e.value)


def test_committed_environments_hold_the_seed_values() -> None:
    envs = load_environments(CONFIG_DIR)
    assert {"local", "production", "staging"} <= set(envs)
    for name in ("staging", "production"):
        e = envs[name]
        assert (e.account, e.region) == ("836347236108", "us-west-1")
        assert e.livekit.url == "wss://callsaver-d8dm5v36.livekit.cloud"
        assert e.livekit.sip_endpoint == "sip:callsaver-d8dm5v36.pstn.livekit.cloud"
        assert (e.agent.cpu, e.agent.memory_mib) == (512, 2048)
        assert (e.agent.min_tasks, e.agent.max_tasks, e.agent.cpu_target_percent) == (1, 2, 80)
    assert envs["local"].account != "836347236108", "the local environment must never point at the real account"
    # One LiveKit project for all three: each environment's agent registers its own name (production keeps the
    # seed's), or they would form one pool and staging would answer production's callers.
    names = {name: e.livekit.worker_name for name, e in envs.items()}
    assert names == {
        "local": "callsaver-agent-local",
        "production": "callsaver-agent",
        "staging": "callsaver-agent-staging",
    }


def test_config_is_frozen() -> None:
    env = load_environment(STAGING)
    with pytest.raises(Exception, match="frozen"):
        env.storage.expiration_days = 1  # type: ignore[misc]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, regoin="us-west-1"))
    assert str(tmp_path / "staging.toml") in msg
    assert "unknown key 'regoin'" in msg
    assert "allowed keys here: account, region, termination_protection" in msg
    assert "remove it or correct its spelling" in msg


def test_unknown_nested_key(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, storage__bucket="x"))
    assert "unknown key 'storage.bucket'; allowed keys here: bucket_name, expiration_days" in msg


def test_name_key_is_rejected_because_the_file_name_is_the_name(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, name="prod"))
    assert "unknown key 'name'" in msg and "file's name ('staging')" in msg


def test_missing_key(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, egress_writer__access_key_serial=None))
    assert "missing key 'egress_writer.access_key_serial'" in msg
    assert "Fix: add it" in msg and "Bump by one" in msg


def test_missing_section(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, agent=None))
    assert "missing key 'agent'" in msg


@pytest.mark.parametrize(
    ("bucket", "reason"),
    [
        ("Callsaver-Sessions", "only lowercase letters"),
        ("ab", "it is 2 characters long (3-63 allowed)"),
        ("a" * 64, "it is 64 characters long"),
        ("callsaver..sessions", "two adjacent periods"),
        ("192.168.10.20", "it is formatted as an IP address"),
        ("xn--callsaver", "the prefix 'xn--' is reserved"),
        ("callsaver-s3alias", "the suffix '-s3alias' is reserved"),
        ("-callsaver", "it must start and end with a lowercase letter or digit"),
        ("callsaver_sessions", "only lowercase letters"),
    ],
)
def test_invalid_bucket_name(tmp_path: Path, bucket: str, reason: str) -> None:
    msg = _error(staging_with(tmp_path, storage__bucket_name=bucket))
    assert f"storage.bucket_name = {bucket!r}: is not a valid S3 bucket name: {reason}" in msg
    assert "use 3-63 characters of a-z, 0-9, '.' and '-'" in msg


def test_valid_bucket_names_pass() -> None:
    for name in ("callsaver-sessions-staging", "a.b.c", "abc", "1-bucket-2"):
        assert bucket_name_problem(name) is None, name


def test_region_that_does_not_exist(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, region="us-west-9"))
    assert "region = 'us-west-9': is not an AWS region" in msg
    assert "us-west-1" in msg and "us-east-1" in msg


@pytest.mark.parametrize("account", ["83634723610", "8363472361089", "83634723610a"])
def test_account_not_12_digits(tmp_path: Path, account: str) -> None:
    msg = _error(staging_with(tmp_path, account=account))
    assert f"account = {account!r}: must be a 12-digit AWS account id" in msg


def test_account_written_as_a_number(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, account=836347236108))
    assert "account = 836347236108: must be a 12-digit AWS account id written as a string" in msg


def test_cpu_memory_not_a_fargate_pair(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, agent__memory_mib=512))
    assert "agent: cpu=512 with memory_mib=512 is not a valid Fargate pair" in msg
    assert "must be one of 1024, 2048, 3072, 4096" in msg


def test_cpu_not_a_fargate_size(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, agent__cpu=300))
    assert "agent: cpu=300 is not a Fargate CPU size; allowed: 256, 512, 1024" in msg


def test_min_tasks_greater_than_max(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, agent__min_tasks=3))
    assert "agent: min_tasks=3 is greater than max_tasks=2; set min_tasks <= max_tasks" in msg


@pytest.mark.parametrize(("target", "rule"), [(0, "greater than or equal to 1"), (101, "less than or equal to 100")])
def test_cpu_target_outside_1_to_100(tmp_path: Path, target: int, rule: str) -> None:
    msg = _error(staging_with(tmp_path, agent__cpu_target_percent=target))
    assert f"agent.cpu_target_percent = {target}: Input should be {rule}" in msg


def test_lifecycle_days_below_one(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, storage__expiration_days=0))
    assert "storage.expiration_days = 0: Input should be greater than or equal to 1" in msg


def test_string_where_a_number_is_meant(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, storage__expiration_days="30"))
    assert "storage.expiration_days = '30': Input should be a valid integer" in msg


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, region="mars-1", storage__expiration_days=0))
    assert "(2 problem(s))" in msg and "region = 'mars-1'" in msg and "storage.expiration_days = 0" in msg


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "staging.toml"
    path.write_text('account = "836347236108"\nregion = \n')
    msg = _error(path)
    assert str(path) in msg and "not valid TOML" in msg and "line 2" in msg


def test_environment_name_must_be_lowercase(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, file_stem="Prod_1"))
    assert "name = 'Prod_1': environment names (the config file's name) must be" in msg


def test_unknown_environment_lists_the_known_ones() -> None:
    envs = load_environments(CONFIG_DIR)
    with pytest.raises(ConfigError) as e:
        select_environments(envs, "prod")
    assert str(e.value) == (
        f"unknown environment 'prod'; known environments: {', '.join(ENV_NAMES)} (add config/prod.toml to create it)"
    )


def test_no_env_selects_every_environment_and_a_name_selects_one() -> None:
    envs = load_environments(CONFIG_DIR)
    assert [e.name for e in select_environments(envs, None)] == ENV_NAMES
    assert [e.name for e in select_environments(envs, "staging")] == ["staging"]


def test_two_environments_cannot_share_a_bucket(tmp_path: Path) -> None:
    shutil.copy(STAGING, tmp_path / "staging.toml")
    shutil.copy(STAGING, tmp_path / "qa.toml")
    with pytest.raises(ConfigError) as e:
        load_environments(tmp_path)
    assert re.search(
        r"staging\.toml: key 'storage\.bucket_name': 'callsaver-sessions-staging' is already used "
        r"by .*qa\.toml",
        str(e.value),
    )


def test_empty_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no environment files"):
        load_environments(tmp_path)


# --------------------------------------------------------------------------- [call_recording] (post-deploy hook)


def test_call_recording_of_the_committed_environments() -> None:
    """Recording is on everywhere, and no environment pins rule ids: each finds its rules by its agent name."""
    envs = load_environments(CONFIG_DIR)
    for env in envs.values():
        hook = env.call_recording
        assert (hook.auto_egress, hook.dispatch_rule_ids, hook.dispatch_rule_names) == (True, (), ())
        assert hook.filepath_template == "{room_name}/{time}" and hook.recording_prefix == ""


def test_dispatch_rule_ids_list_becomes_a_tuple(tmp_path: Path) -> None:
    env = load_environment(staging_with(tmp_path, call_recording__dispatch_rule_ids=["SDR_abc123"]))
    assert env.call_recording.dispatch_rule_ids == ("SDR_abc123",) and env.call_recording.narrowed


def test_recording_is_on_by_default(tmp_path: Path) -> None:
    env = load_environment(staging_with(tmp_path))
    assert env.call_recording.auto_egress is True and not env.call_recording.narrowed


@pytest.mark.parametrize(
    ("names", "expected"),
    [([" "], "holds an empty name"), (["main", "main"], "lists a dispatch rule name more than once")],
)
def test_dispatch_rule_names_rules(tmp_path: Path, names: list[str], expected: str) -> None:
    msg = _error(staging_with(tmp_path, call_recording__dispatch_rule_names=names))
    assert "call_recording.dispatch_rule_names = " in msg and expected in msg


@pytest.mark.parametrize("name", ["", "-agent", "agent name", "a" * 65])
def test_worker_name_must_be_an_agent_name(tmp_path: Path, name: str) -> None:
    msg = _error(staging_with(tmp_path, livekit__worker_name=name))
    assert f"livekit.worker_name = {name!r}: is not an agent name" in msg


def _project(tmp_path: Path, **changes: dict[str, Any]) -> Path:
    """A config directory of staging and production (one LiveKit project), each with dotted-key changes."""
    directory = tmp_path / "cfg"
    directory.mkdir()
    for stem in ("staging", "production"):
        data = tomllib.loads((CONFIG_DIR / f"{stem}.toml").read_text())
        for dotted, value in changes.get(stem, {}).items():
            section, key = dotted.split("__")
            data[section][key] = value
        write_toml(directory / f"{stem}.toml", data)
    return directory


def test_two_environments_of_one_project_with_one_agent_name_are_refused(tmp_path: Path) -> None:
    directory = _project(tmp_path, staging={"livekit__worker_name": "callsaver-agent"})
    with pytest.raises(ConfigError) as e:
        load_environments(directory)
    msg = str(e.value)
    assert f"{directory / 'production.toml'} and {directory / 'staging.toml'}: key 'livekit.worker_name'" in msg
    assert "would form one pool and take each other's calls" in msg and "callsaver-agent-staging" in msg


def test_two_projects_may_use_one_agent_name(tmp_path: Path) -> None:
    directory = _project(
        tmp_path,
        staging={"livekit__worker_name": "callsaver-agent", "livekit__url": "wss://callsaver-staging.livekit.cloud"},
    )
    assert load_environments(directory)["staging"].livekit.worker_name == "callsaver-agent"


@pytest.mark.parametrize(
    ("key", "value"), [("dispatch_rule_ids", ["SDR_shared1"]), ("dispatch_rule_names", ["main line"])]
)
def test_overlapping_rule_selections_in_one_project_are_refused(tmp_path: Path, key: str, value: list[str]) -> None:
    directory = _project(
        tmp_path, staging={f"call_recording__{key}": value}, production={f"call_recording__{key}": value}
    )
    with pytest.raises(ConfigError) as e:
        load_environments(directory)
    msg = str(e.value)
    assert f"key 'call_recording.{key}' both select {value[0]} in the same LiveKit project" in msg
    assert "production.toml" in msg and "staging.toml" in msg


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["rule-1"], "['rule-1'] are not SIP dispatch rule ids; expected SDR_ followed by letters and digits"),
        (["SDR_"], "['SDR_'] are not SIP dispatch rule ids"),
        (["SDR_abc", "SDR_abc"], "lists a dispatch rule more than once"),
    ],
)
def test_dispatch_rule_ids_must_be_rule_ids(tmp_path: Path, ids: list[str], expected: str) -> None:
    msg = _error(staging_with(tmp_path, call_recording__dispatch_rule_ids=ids))
    assert "call_recording.dispatch_rule_ids = " in msg and expected in msg


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("calls/{time}", "must contain {room_name} or {room_id}"),
        ("{room_name}/{date}", "uses {date}, which LiveKit does not expand; allowed: {room_name}, {room_id}, {time}"),
        ("/{room_name}/{time}", "must not start with '/'"),
        ("_healthcheck/{room_name}", "must not start with '_healthcheck/': push-egress --verify writes there"),
    ],
)
def test_filepath_template_rules(tmp_path: Path, template: str, expected: str) -> None:
    msg = _error(staging_with(tmp_path, call_recording__filepath_template=template))
    assert f"call_recording.filepath_template = {template!r}: {expected}" in msg


@pytest.mark.parametrize("template", ["{room_id}", "recordings/{room_name}-{utc}-{retry}.ogg"])
def test_filepath_template_accepts_livekit_variables(tmp_path: Path, template: str) -> None:
    env = load_environment(staging_with(tmp_path, call_recording__filepath_template=template))
    assert env.call_recording.filepath_template == template


def test_call_recording_section_is_required(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, call_recording=None))
    assert "missing key 'call_recording'" in msg


def test_break_glass_role_is_optional_and_read_from_the_security_section(tmp_path: Path) -> None:
    assert load_environment(STAGING).security.break_glass_role_arn is None
    role = "arn:aws:iam::836347236108:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_BreakGlass_0123abcd"
    config = load_environment(staging_with(tmp_path, security={"break_glass_role_arn": role}))
    assert config.security.break_glass_role_arn == role


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::836347236108:user/alice",
        "arn:aws:sts::836347236108:assumed-role/admin/alice",
        "arn:aws:iam::836347236108:role/*",
        "callsaver-break-glass",
    ],
)
def test_break_glass_must_be_a_role_arn(tmp_path: Path, arn: str) -> None:
    message = _error(staging_with(tmp_path, security={"break_glass_role_arn": arn}))
    assert f"security.break_glass_role_arn = {arn!r}: must be an IAM role ARN" in message


def test_break_glass_role_must_be_in_the_environments_account(tmp_path: Path) -> None:
    arn = "arn:aws:iam::111122223333:role/break-glass"
    message = _error(staging_with(tmp_path, security={"break_glass_role_arn": arn}))
    assert "security.break_glass_role_arn is in account 111122223333, this environment in 836347236108" in message


def test_monitoring_section_is_optional_with_defaults() -> None:
    monitoring = load_environment(STAGING).monitoring
    assert monitoring.email_subscriptions == ()
    assert monitoring.max_hours_without_recording is None  # no alarm: quiet weekends are normal
    assert (monitoring.agent_down_minutes, monitoring.saturation_minutes) == (3, 10)
    assert (monitoring.upload_errors_threshold, monitoring.upload_errors_period_minutes) == (1, 5)


def test_monitoring_section_is_read(tmp_path: Path) -> None:
    path = staging_with(
        tmp_path, monitoring={"email_subscriptions": ["oncall@example.com"], "max_hours_without_recording": 12}
    )
    monitoring = load_environment(path).monitoring
    assert (monitoring.email_subscriptions, monitoring.max_hours_without_recording) == (("oncall@example.com",), 12)


@pytest.mark.parametrize(
    ("emails", "problem"),
    [
        (["oncall"], "are not e-mail addresses; write each as name@example.com"),
        (["a@example.com", "a@example.com"], "lists an address more than once"),
    ],
)
def test_bad_email_subscriptions(tmp_path: Path, emails: list[str], problem: str) -> None:
    msg = _error(staging_with(tmp_path, monitoring={"email_subscriptions": emails}))
    assert str(tmp_path / "staging.toml") in msg
    assert "monitoring.email_subscriptions" in msg and problem in msg


@pytest.mark.parametrize("hours", [0, 169])
def test_max_hours_without_recording_out_of_range(tmp_path: Path, hours: int) -> None:
    msg = _error(staging_with(tmp_path, monitoring={"max_hours_without_recording": hours}))
    assert f"monitoring.max_hours_without_recording = {hours}: must be 1-168 hours" in msg
    assert "remove the key to turn the alarm off" in msg


def test_alarm_periods_beyond_what_cloudwatch_evaluates(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, monitoring={"agent_down_minutes": 1441, "upload_errors_threshold": 0}))
    assert "monitoring.agent_down_minutes = 1441: Input should be less than or equal to 1440" in msg
    assert "monitoring.upload_errors_threshold = 0" in msg


def test_unknown_monitoring_key(tmp_path: Path) -> None:
    msg = _error(staging_with(tmp_path, monitoring={"emails": ["a@example.com"]}))
    assert "unknown key 'monitoring.emails'; allowed keys here: email_subscriptions, max_hours_without_recording" in msg


@pytest.mark.parametrize(("old", "new"), [("egress", "egress_writer"), ("livekit_egress", "call_recording")])
def test_an_old_section_name_names_the_file_and_the_new_one(tmp_path: Path, old: str, new: str) -> None:
    data = tomllib.loads(STAGING.read_text())
    data[old] = data.pop(new)
    path = write_toml(tmp_path / "staging.toml", data)
    assert _error(path) == f"{path}: section [{old}] is now [{new}] (same keys): rename the section header to [{new}]"
