"""Per-environment configuration: one TOML file per environment under `config/`, validated up front.

The environment's name is the file's name (`config/staging.toml` is `staging`), so adding an environment is
adding a file. Every error names the file, the key, the bad value and the fix, before any construct is built.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from callsaver_infra.app.names import CDK_DEFAULT_QUALIFIER, HEALTHCHECK_PREFIX
from callsaver_infra.app.regions import KNOWN_REGIONS

ENV_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
AGENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Fargate's valid task sizes: CPU units -> allowed memory (MiB). Source: the ECS developer guide,
# "Task CPU and memory" (Linux, platform 1.4.0).
FARGATE_MEMORY_BY_CPU: Mapping[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}

_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]+$")
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid; the message says where and how to fix it."""


def _tuple_from_list(v: Any) -> Any:
    # TOML arrays arrive as lists; strict mode wants the frozen tuple.
    return tuple(v) if isinstance(v, list) else v


def _check_account(v: Any) -> Any:
    if not (isinstance(v, str) and re.fullmatch(r"\d{12}", v)):
        raise ValueError('must be a 12-digit AWS account id written as a string, e.g. "123456789012"')
    return v


def _check_region(v: str) -> str:
    regions = known_regions()
    if v not in regions:
        near = [r for r in regions if r.split("-")[0] == v.split("-")[0]] or sorted(regions)
        raise ValueError(f"is not an AWS region; known regions include: {', '.join(sorted(near))}")
    return v


# Field types shared by every config file (environments and CI).
StrTuple = Annotated[tuple[str, ...], BeforeValidator(_tuple_from_list)]
AccountId = Annotated[str, BeforeValidator(_check_account)]
AwsRegion = Annotated[str, AfterValidator(_check_region)]


class _Section(BaseModel):
    # strict: TOML is typed, so "30" where 30 is meant is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LiveKitConfig(_Section):
    """Where the LiveKit Cloud project lives and what the agent registers as."""

    url: str = Field(description="LiveKit Cloud WebSocket URL, `wss://<project>.livekit.cloud`")
    sip_endpoint: str = Field(description="The project's SIP URI, `sip:<project>.pstn.livekit.cloud`")
    worker_name: str = Field(
        description="The agent name the environment's workers register under (LIVEKIT_WORKER_NAME and "
        "LIVEKIT_AGENT_NAME); unique among environments that share `url`, or they form one pool and take each "
        "other's calls"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.fullmatch(r"wss://[a-z0-9.-]+(:\d+)?/?", v):
            raise ValueError("must be a LiveKit WebSocket URL such as 'wss://myproject.livekit.cloud'")
        return v

    @field_validator("worker_name")
    @classmethod
    def _worker_name(cls, v: str) -> str:
        if not AGENT_NAME_PATTERN.fullmatch(v):
            raise ValueError(
                "is not an agent name; use 1-64 of A-Z a-z 0-9 _ . - starting with a letter or digit, "
                "e.g. 'callsaver-agent-staging'"
            )
        return v

    @field_validator("sip_endpoint")
    @classmethod
    def _sip(cls, v: str) -> str:
        if not re.fullmatch(r"sip:[a-z0-9.-]+", v):
            raise ValueError("must be a SIP URI such as 'sip:myproject.pstn.livekit.cloud'")
        return v


class StorageConfig(_Section):
    """The session-recording bucket."""

    bucket_name: str = Field(
        description="Globally unique S3 bucket name for call recordings (S3's naming rules are enforced); one per "
        "environment"
    )
    expiration_days: int = Field(ge=1, description="Days after which a recording is deleted (S3 lifecycle expiration)")

    @field_validator("bucket_name")
    @classmethod
    def _bucket_name(cls, v: str) -> str:
        problem = bucket_name_problem(v)
        if problem:
            raise ValueError(
                f"is not a valid S3 bucket name: {problem}; use 3-63 characters of a-z, 0-9, '.' and '-', "
                "starting and ending with a letter or digit"
            )
        return v


# CDK's bootstrap qualifier: the template's own AllowedPattern is [A-Za-z0-9_-]{1,10}, but the qualifier is also part
# of the assets bucket's name (cdk-<qualifier>-assets-<account>-<region>), which S3 wants in lowercase, without "_".
QUALIFIER_PATTERN = re.compile(r"^[a-z0-9]{1,10}$")


class BootstrapConfig(_Section):
    """Which CDK bootstrap (toolkit stack and roles) the environment's stacks deploy through."""

    qualifier: str | None = Field(
        default=None,
        description="CDK bootstrap qualifier of this environment's own bootstrap (`callsaver-infra bootstrap`); "
        "unset: the account's default bootstrap (qualifier hnb659fds, AdministratorAccess)",
    )

    @field_validator("qualifier")
    @classmethod
    def _qualifier(cls, v: str | None) -> str | None:
        if v is not None and not QUALIFIER_PATTERN.fullmatch(v):
            raise ValueError(
                "is not a CDK bootstrap qualifier usable in the assets bucket's name; use 1-10 lowercase letters "
                "and digits, e.g. 'cstaging'"
            )
        return v


class EgressWriterConfig(_Section):
    """The IAM identity LiveKit egress uses to upload recordings."""

    access_key_serial: int = Field(
        ge=1,
        description="Bump by one and deploy to issue a new access key; the old one stays active until "
        "`callsaver-infra rotate-egress-key` retires it",
    )


# An IAM role ARN (with an optional path, as IAM Identity Center's AWSReservedSSO_* roles have one).
ROLE_ARN_PATTERN = re.compile(r"^arn:aws(?:-cn|-us-gov)?:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$")


class SecurityConfig(_Section):
    """Who may read call recordings and secrets besides the identities this app creates."""

    break_glass_role_arn: str | None = Field(
        default=None,
        description="IAM role ARN (in this environment's account) that may read recordings and secrets in an "
        "incident; unset: only the RecordingReader role, the agent and the deploy hook can",
    )

    @field_validator("break_glass_role_arn")
    @classmethod
    def _role_arn(cls, v: str | None) -> str | None:
        if v is not None and not ROLE_ARN_PATTERN.fullmatch(v):
            raise ValueError(
                'must be an IAM role ARN such as "arn:aws:iam::123456789012:role/callsaver-break-glass" '
                "(a role, not a user or an assumed-role session; no wildcards)"
            )
        return v


# CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
IMAGE_TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# The tags that name one image for good: the agent repository's full commit SHA, or a full release version
# (v1.4.2, 1.4.2-rc.1). `latest`, branch names and floating versions (v1, v1.4) move to other images over time,
# so a deploy of them is not reproducible (and the registry's immutable tags would refuse to move them anyway).
IMMUTABLE_TAG_PATTERN = re.compile(r"^(?:[0-9a-f]{40}|v?\d+\.\d+\.\d+(?:-[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?)$")
IMMUTABLE_TAG_FIX = (
    "use an immutable tag: the agent repository's full commit SHA (40 lowercase hex characters) or a release "
    "version such as v1.4.2"
)
# ECR repository names (ECR's CreateRepository constraint).
ECR_REPOSITORY_PATTERN = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")


def image_tag_problem(tag: str) -> str | None:
    """Why `tag` must not be deployed (not a tag at all, or one that can move), or None for an immutable tag."""
    if not IMAGE_TAG_PATTERN.fullmatch(tag):
        return (
            "is not a container image tag (up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -); "
            + IMMUTABLE_TAG_FIX
        )
    if tag == "latest":
        return f"'latest' moves with every push, so a deploy could run any image; {IMMUTABLE_TAG_FIX}"
    if not IMMUTABLE_TAG_PATTERN.fullmatch(tag):
        return f"looks like a moving tag (a branch name, 'latest' or a floating version); {IMMUTABLE_TAG_FIX}"
    return None


class AgentConfig(_Section):
    """The LiveKit agent's Fargate service: image, size, scaling and logs."""

    image_repository: str = Field(
        description="ECR repository (name, in this account and region) of the agent image: the Callsaver-Registry "
        "stack's (config/ci/registry.toml)"
    )
    image_tag: str = Field(
        description="Immutable tag of the agent image to run: the agent repository's full commit SHA or a release "
        "version such as v1.4.2 (not `latest`, a branch or a floating version); the one source of the deployed tag, "
        "overridden only by `-c agentImageTag=<tag>` for a hotfix"
    )
    cpu: int = Field(description="Fargate task CPU units (256, 512, 1024, ...); with memory_mib a valid Fargate pair")
    memory_mib: int = Field(
        description="Fargate task memory in MiB; must be a valid Fargate pair with cpu (cpu 512: 1024-4096)"
    )
    min_tasks: int = Field(
        ge=1,
        description="Fewest running tasks (autoscaling lower bound, at most max_tasks); at least 1 so calls are "
        "answered",
    )
    max_tasks: int = Field(ge=1, description="Most running tasks (autoscaling upper bound)")
    cpu_target_percent: int = Field(
        ge=1,
        le=100,
        description="Average CPU the autoscaler aims for; keep it below the livekit-agents workers' load_threshold "
        "(0.7 by default), or they refuse calls before ECS scales out",
    )
    log_retention_days: int = Field(
        description="Days CloudWatch keeps the agent's logs (/callsaver/{env}/agent); a CloudWatch Logs retention "
        "period: 1, 3, 5, 7, 14, 30, 60, 90, ..."
    )

    @field_validator("image_repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        if not ECR_REPOSITORY_PATTERN.fullmatch(v) or len(v) > 256:
            raise ValueError("is not an ECR repository name; use lowercase letters, digits and . _ - /")
        return v

    @field_validator("image_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        problem = image_tag_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, v: int) -> int:
        if v not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"is not a CloudWatch Logs retention period; use one of {', '.join(map(str, LOG_RETENTION_DAYS))}"
            )
        return v

    @model_validator(mode="after")
    def _fargate_and_scaling(self) -> AgentConfig:
        allowed = FARGATE_MEMORY_BY_CPU.get(self.cpu)
        if allowed is None:
            raise ValueError(
                f"cpu={self.cpu} is not a Fargate CPU size; allowed: "
                + ", ".join(str(c) for c in FARGATE_MEMORY_BY_CPU)
            )
        if self.memory_mib not in allowed:
            raise ValueError(
                f"cpu={self.cpu} with memory_mib={self.memory_mib} is not a valid Fargate pair; "
                f"memory_mib for cpu={self.cpu} must be one of {', '.join(str(m) for m in allowed)}"
            )
        if self.min_tasks > self.max_tasks:
            raise ValueError(
                f"min_tasks={self.min_tasks} is greater than max_tasks={self.max_tasks}; set min_tasks <= max_tasks"
            )
        return self


class NetworkConfig(_Section):
    """Where the agent's tasks run: by default a new two-AZ public-subnet VPC, or an existing VPC named by id."""

    existing_vpc_id: str | None = Field(
        default=None,
        description="Run the agent's tasks in this VPC's public subnets instead of creating a VPC (set the three "
        "existing_* keys together, or none)",
    )
    existing_subnet_ids: StrTuple = Field(
        default=(), description="Public subnets of existing_vpc_id, in at least two availability zones"
    )
    existing_subnet_zones: StrTuple = Field(
        default=(), description="The availability zone of each existing subnet, in the same order"
    )

    @field_validator("existing_vpc_id")
    @classmethod
    def _vpc_id(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"vpc-[0-9a-f]{8}|vpc-[0-9a-f]{17}", v):
            raise ValueError("is not a VPC id; expected vpc- followed by 8 or 17 hex digits")
        return v

    @field_validator("existing_subnet_ids")
    @classmethod
    def _subnet_ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not re.fullmatch(r"subnet-[0-9a-f]{8}|subnet-[0-9a-f]{17}", s)]
        if bad:
            raise ValueError(f"{bad} are not subnet ids; expected subnet- followed by 8 or 17 hex digits")
        return v

    @model_validator(mode="after")
    def _together(self) -> NetworkConfig:
        given = [bool(self.existing_vpc_id), bool(self.existing_subnet_ids), bool(self.existing_subnet_zones)]
        if any(given) and not all(given):
            raise ValueError(
                "set existing_vpc_id, existing_subnet_ids and existing_subnet_zones together, "
                "or none of them (to create a VPC)"
            )
        if len(self.existing_subnet_ids) != len(self.existing_subnet_zones):
            raise ValueError(
                "existing_subnet_zones needs one zone per subnet in existing_subnet_ids, in the same order"
            )
        if self.existing_subnet_ids and len(set(self.existing_subnet_zones)) < 2:
            raise ValueError("existing_subnet_ids must span at least two availability zones")
        return self


# Variables livekit/egress expands in an output's filepath; anything else in braces would be written literally.
EGRESS_FILEPATH_VARIABLES = ("{room_name}", "{room_id}", "{time}", "{utc}", "{retry}")
# The post-deploy hook's --verify writes its test recordings here; recordings of calls must never land under it.
DISPATCH_RULE_ID_PATTERN = re.compile(r"^SDR_[A-Za-z0-9]+$")


class CallRecordingConfig(_Section):
    """What `callsaver-infra push-egress` pushes into LiveKit: automatic recording of inbound calls.

    The environment's inbound dispatch rules are the rules whose `room_config.agents` dispatch its agent
    (`livekit.worker_name`); `dispatch_rule_ids` / `dispatch_rule_names` narrow that set, never widen it.
    """

    auto_egress: bool = Field(
        default=True,
        description="Record every inbound call through the environment's dispatch rules (false: nothing is pushed)",
    )
    dispatch_rule_ids: StrTuple = Field(
        default=(), description="Only these of the agent's rules (SDR_...); default: every rule dispatching the agent"
    )
    dispatch_rule_names: StrTuple = Field(
        default=(), description="Only the agent's rules with these names; default: every rule dispatching the agent"
    )
    filepath_template: str = Field(
        description="Object key of each recording, e.g. `{room_name}/{time}` (LiveKit appends .ogg); must contain "
        "{room_name} or {room_id}; only LiveKit's {room_name} {room_id} {time} {utc} {retry}; no leading /, not "
        "under _healthcheck/"
    )

    @field_validator("dispatch_rule_ids")
    @classmethod
    def _rule_ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in v if not DISPATCH_RULE_ID_PATTERN.fullmatch(r)]
        if bad:
            raise ValueError(
                f"{bad} are not SIP dispatch rule ids; expected SDR_ followed by letters and digits "
                "(see `callsaver-infra status` or `lk sip dispatch list`)"
            )
        if len(set(v)) != len(v):
            raise ValueError("lists a dispatch rule more than once; list each rule once")
        return v

    @field_validator("dispatch_rule_names")
    @classmethod
    def _rule_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not name.strip() for name in v):
            raise ValueError("holds an empty name; list the rules' names as LiveKit shows them")
        if len(set(v)) != len(v):
            raise ValueError("lists a dispatch rule name more than once; list each name once")
        return v

    @field_validator("filepath_template")
    @classmethod
    def _filepath(cls, v: str) -> str:
        unknown = sorted(set(re.findall(r"\{[^{}]*\}", v)) - set(EGRESS_FILEPATH_VARIABLES))
        if unknown:
            raise ValueError(
                f"uses {', '.join(unknown)}, which LiveKit does not expand; "
                f"allowed: {', '.join(EGRESS_FILEPATH_VARIABLES)}"
            )
        if "{room_name}" not in v and "{room_id}" not in v:
            raise ValueError("must contain {room_name} or {room_id}, or every call would write the same key")
        if v.startswith("/"):
            raise ValueError("must not start with '/': it is an S3 object key, relative to the bucket")
        if v.startswith(HEALTHCHECK_PREFIX):
            raise ValueError(f"must not start with {HEALTHCHECK_PREFIX!r}: push-egress --verify writes there")
        return v

    @property
    def narrowed(self) -> bool:
        """True when config names particular rules instead of every rule dispatching the agent."""
        return bool(self.dispatch_rule_ids or self.dispatch_rule_names)

    @property
    def recording_prefix(self) -> str:
        """The static part of filepath_template before its first variable: where recordings of calls land."""
        return self.filepath_template.split("{", 1)[0]


EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z0-9-]{2,}$")
# CloudWatch evaluates at most one day of sub-hour periods and seven days of hourly ones (PutMetricAlarm, Period).
MAX_MINUTE_PERIODS = 24 * 60
MAX_HOURLY_PERIODS = 7 * 24


class MonitoringConfig(_Section):
    """Who is told, and when, that the agent is down or recordings stop arriving (the Monitoring stack)."""

    email_subscriptions: StrTuple = Field(
        default=(), description="E-mail addresses subscribed to the alert topic (each confirms once by e-mail)"
    )
    max_hours_without_recording: int | None = Field(
        default=None,
        description="Alarm when no recording arrived for this many hours (1-168); unset: no such alarm",
    )
    agent_down_minutes: int = Field(
        default=3, ge=1, le=MAX_MINUTE_PERIODS, description="Minutes below agent.min_tasks before alarming"
    )
    saturation_minutes: int = Field(
        default=10,
        ge=1,
        le=MAX_MINUTE_PERIODS,
        description="Minutes at agent.max_tasks with CPU above agent.cpu_target_percent before alarming",
    )
    upload_errors_threshold: int = Field(
        default=1, ge=1, description="4xx errors on recording uploads within one period that raise the alarm"
    )
    upload_errors_period_minutes: int = Field(
        default=5, ge=1, le=MAX_MINUTE_PERIODS, description="Period over which 4xx upload errors are summed"
    )

    @field_validator("email_subscriptions")
    @classmethod
    def _emails(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [e for e in v if not EMAIL_PATTERN.fullmatch(e)]
        if bad:
            raise ValueError(f"{bad} are not e-mail addresses; write each as name@example.com")
        if len(set(v)) != len(v):
            raise ValueError("lists an address more than once; list each address once")
        return v

    @field_validator("max_hours_without_recording")
    @classmethod
    def _hours(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= MAX_HOURLY_PERIODS:
            raise ValueError(
                f"must be 1-{MAX_HOURLY_PERIODS} hours (CloudWatch evaluates at most seven days); "
                "remove the key to turn the alarm off"
            )
        return v


class EnvironmentConfig(_Section):
    """Everything one environment's stacks need; built once in app.py and passed down, never re-read."""

    name: str = Field(description="Environment name; taken from the config file's name")
    account: AccountId = Field(description="12-digit AWS account id, written as a string (in quotes)")
    region: AwsRegion = Field(description="AWS region, e.g. us-west-1 (checked against aws-cdk-lib's region table)")
    termination_protection: bool = Field(
        description="Protect this environment's stacks from deletion (true for production)"
    )
    livekit: LiveKitConfig
    storage: StorageConfig
    egress_writer: EgressWriterConfig
    agent: AgentConfig
    network: NetworkConfig = Field(default_factory=NetworkConfig, description="Optional; default: a new VPC")
    call_recording: CallRecordingConfig
    security: SecurityConfig = Field(default_factory=SecurityConfig, description="Optional; default: no break-glass")
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig, description="Optional; default: alarms without e-mail subscriptions"
    )
    bootstrap: BootstrapConfig = Field(
        default_factory=BootstrapConfig, description="Optional; default: the account's default CDK bootstrap"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ENV_NAME_PATTERN.fullmatch(v):
            raise ValueError(
                "environment names (the config file's name) must be 1-20 characters of a-z, 0-9 and '-', "
                "starting with a letter"
            )
        return v

    @model_validator(mode="after")
    def _zones_in_region(self) -> EnvironmentConfig:
        zones = self.network.existing_subnet_zones
        wrong = [z for z in zones if not re.fullmatch(re.escape(self.region) + r"[a-z]", z)]
        if wrong:
            raise ValueError(f"network.existing_subnet_zones {wrong} are not zones of region {self.region}")
        role = self.security.break_glass_role_arn
        match = ROLE_ARN_PATTERN.fullmatch(role) if role else None
        if match and match.group(1) != self.account:
            raise ValueError(
                f"security.break_glass_role_arn is in account {match.group(1)}, this environment in {self.account}; "
                "name a role of this environment's account (the bucket and secret policies compare exact ARNs)"
            )
        return self


def with_image_tag(config: EnvironmentConfig, tag: str) -> EnvironmentConfig:
    """The same config running another agent image tag (from `-c agentImageTag=...`), validated like the file."""
    try:
        return EnvironmentConfig.model_validate(
            {**config.model_dump(), "agent": {**config.agent.model_dump(), "image_tag": tag}}
        )
    except ValidationError as e:
        raise ConfigError(
            f"context agentImageTag={tag!r}: {e.errors()[0]['msg'].removeprefix('Value error, ')}"
        ) from None


def bucket_name_problem(name: str) -> str | None:
    """Return why `name` breaks S3's general-purpose bucket naming rules, or None if it is valid."""
    if not 3 <= len(name) <= 63:
        return f"it is {len(name)} characters long (3-63 allowed)"
    if not _BUCKET_CHARS.fullmatch(name):
        return "only lowercase letters, digits, '.' and '-' are allowed"
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "it must start and end with a lowercase letter or digit"
    if ".." in name:
        return "two adjacent periods are not allowed"
    try:
        ipaddress.IPv4Address(name)
        return "it is formatted as an IP address"
    except ValueError:
        pass
    for prefix in _BUCKET_RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"the prefix '{prefix}' is reserved"
    for suffix in _BUCKET_RESERVED_SUFFIXES:
        if name.endswith(suffix):
            return f"the suffix '{suffix}' is reserved"
    return None


def known_regions() -> frozenset[str]:
    """AWS regions known to the pinned aws-cdk-lib (a copy of its offline table: no Node, network or credentials)."""
    return KNOWN_REGIONS


# Sections renamed for what they hold: [egress] held the egress writer's key serial, [livekit_egress] which calls
# are recorded and where. A file with an old name gets an error naming the new one, never a silent default.
RENAMED_SECTIONS: Mapping[str, str] = {"egress": "egress_writer", "livekit_egress": "call_recording"}


def load_environment(path: Path) -> EnvironmentConfig:
    """Read and validate one environment file; raise ConfigError naming the file, key and fix."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for section, renamed in RENAMED_SECTIONS.items():
        if section in data:
            raise ConfigError(
                f"{path}: section [{section}] is now [{renamed}] (same keys): rename the section header to [{renamed}]"
            )
    if "name" in data:
        raise ConfigError(
            f"{path}: unknown key 'name': the environment's name is the file's name ({path.stem!r}); "
            "remove the key, or rename the file"
        )
    try:
        return EnvironmentConfig.model_validate({"name": path.stem, **data})
    except ValidationError as e:
        raise config_error(path, EnvironmentConfig, e) from None


def load_environments(config_dir: Path) -> dict[str, EnvironmentConfig]:
    """Load every `*.toml` under config_dir, keyed by environment name, and check them against each other."""
    paths = sorted(config_dir.glob("*.toml"))
    if not paths:
        raise ConfigError(f"{config_dir}: no environment files (*.toml) found; add one per environment")
    envs = {p.stem: load_environment(p) for p in paths}
    owners: dict[str, str] = {}
    for env in envs.values():
        other = owners.setdefault(env.storage.bucket_name, env.name)
        if other != env.name:
            raise ConfigError(
                f"{config_dir / (env.name + '.toml')}: key 'storage.bucket_name': {env.storage.bucket_name!r} "
                f"is already used by {config_dir / (other + '.toml')}; each environment needs its own bucket"
            )
    check_livekit_identities(config_dir, envs)
    check_bootstrap_qualifiers(config_dir, envs)
    return envs


def effective_qualifier(config: EnvironmentConfig) -> str:
    """The CDK bootstrap qualifier the environment deploys through: its own, or CDK's default."""
    return config.bootstrap.qualifier or CDK_DEFAULT_QUALIFIER


def _suggested_qualifier(config: EnvironmentConfig) -> str:
    return "c" + config.name.replace("-", "")[:9]


def check_bootstrap_qualifiers(config_dir: Path, envs: Mapping[str, EnvironmentConfig]) -> None:
    """Environments in one account and region need their own bootstrap qualifier: with one, both deploy through the
    same bootstrap roles, so either environment's deploy path can change the other's stacks."""
    problems: list[str] = []
    ordered = [envs[name] for name in sorted(envs)]
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if (first.account, first.region) != (second.account, second.region):
                continue
            qualifier = effective_qualifier(first)
            if qualifier != effective_qualifier(second):
                continue
            a, b = (config_dir / f"{e.name}.toml" for e in (first, second))
            # Suggest a change to the one whose qualifier is not already its own name's (a copied file).
            rename = next((e for e in (second, first) if e.bootstrap.qualifier != _suggested_qualifier(e)), second)
            shown = (
                f"= {qualifier!r} in both"
                if first.bootstrap.qualifier
                else f"unset in both (CDK's default {qualifier!r})"
            )
            problems.append(
                f"{a} and {b}: key 'bootstrap.qualifier' {shown}, with the same account {first.account} and region "
                f"{first.region}: both environments would deploy through one set of CDK bootstrap roles, so either "
                f"one's deploy path could change or delete the other's stacks; give each its own qualifier (e.g. "
                f'qualifier = "{_suggested_qualifier(rename)}" under [bootstrap] in '
                f"{config_dir / (rename.name + '.toml')}) and run `callsaver-infra bootstrap --env {rename.name}`"
            )
    if problems:
        raise ConfigError("\n".join(problems))


def check_livekit_identities(config_dir: Path, envs: Mapping[str, EnvironmentConfig]) -> None:
    """Environments sharing a LiveKit project need their own agent name and disjoint dispatch-rule selections.

    LiveKit dispatches a job to any worker registered under the agent name in the project, so two environments
    with one name form one pool (staging would answer production's callers), and a rule selected by two
    environments would have its recordings pushed to whichever deployed last.
    """
    problems: list[str] = []
    ordered = [envs[name] for name in sorted(envs)]
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if first.livekit.url != second.livekit.url:
                continue
            a, b = (config_dir / f"{e.name}.toml" for e in (first, second))
            if first.livekit.worker_name == second.livekit.worker_name:
                rename = next(
                    (e for e in (second, first) if e.livekit.worker_name != f"callsaver-agent-{e.name}"), second
                )
                problems.append(
                    f"{a} and {b}: key 'livekit.worker_name' = {first.livekit.worker_name!r} in both, with the same "
                    f"livekit.url {first.livekit.url!r}: the two environments' agents would form one pool and take "
                    f"each other's calls; give each its own worker_name (e.g. 'callsaver-agent-{rename.name}' in "
                    f"{config_dir / (rename.name + '.toml')})"
                )
            for key in ("dispatch_rule_ids", "dispatch_rule_names"):
                shared = sorted(set(getattr(first.call_recording, key)) & set(getattr(second.call_recording, key)))
                if shared:
                    problems.append(
                        f"{a} and {b}: key 'call_recording.{key}' both select {', '.join(shared)} in the same LiveKit "
                        f"project: calls through it would be recorded into whichever environment pushed last; "
                        f"list each rule in one environment only"
                    )
    if problems:
        raise ConfigError("\n".join(problems))


def select_environments(envs: Mapping[str, EnvironmentConfig], wanted: str | None) -> list[EnvironmentConfig]:
    """The environments to synthesize: the one named by `-c env=NAME`, or all of them when none is named."""
    if wanted is None:
        return [envs[name] for name in sorted(envs)]
    if wanted not in envs:
        raise ConfigError(
            f"unknown environment {wanted!r}; known environments: {', '.join(sorted(envs))} "
            f"(add config/{wanted}.toml to create it)"
        )
    return [envs[wanted]]


def config_error(path: Path, model: type[BaseModel], error: ValidationError) -> ConfigError:
    """One ConfigError listing every problem of a config file, each with its key, bad value and fix."""
    lines = [f"{path}: invalid configuration ({error.error_count()} problem(s)):"]
    lines += [f"  - {_describe(model, err)}" for err in error.errors()]
    return ConfigError("\n".join(lines))


def _describe(root: type[BaseModel], err: Mapping[str, Any]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_at(root, loc[:-1]))
        return f"unknown key '{key}'; allowed keys here: {allowed}. Fix: remove it or correct its spelling"
    if kind == "missing":
        field = _field_at(root, loc)
        hint = f" ({field.description})" if field is not None and field.description else ""
        return f"missing key '{key}'{hint}. Fix: add it"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, Mapping):
        return f"{key}: {msg}"
    return f"{key} = {value!r}: {msg}"


def _model_at(root: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel] | None:
    model = root
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _fields_at(root: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    # "name" is the environment file's name, never a key in it.
    model = _model_at(root, loc)
    return [f for f in model.model_fields if f != "name"] if model is not None else []


def _field_at(root: type[BaseModel], loc: tuple[str, ...]) -> Any:
    model = _model_at(root, loc[:-1])
    return model.model_fields.get(loc[-1]) if model is not None and loc else None
