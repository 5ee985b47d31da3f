"""The agent's settings: one YAML file plus `EDGE_AGENT_*` environment variables (nested with `__`).

Built once in `main` (the CLI) and passed down; there is no module-level settings object, so many agent cores
can live in one process. Every setting carries a description: `edge-agent config-help` prints them (never a
secret's value: secrets are `SecretStr`, unwrapped only where they are handed to a library).
pydantic-settings reads the file (its YAML source) and the environment, which wins over the file setting by setting.
A bad file or value becomes a `ConfigError` with the reason, never a traceback.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from enum import Enum
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from edge_agent.core.deadlines import Deadlines
from edge_agent.protocol.signing import valid_public_key
from edge_agent.protocol.topics import validate_device_id
from edge_agent.protocol.tunnel import TunnelEndpoint
from edge_agent.protocol.validation import describe_error
from edge_agent.protocol.vocabulary import MqttProtocol
from edge_agent.serving.limits import ServingLimits

DEFAULT_CONFIG_PATH = Path("/etc/edge-agent/agent.yaml")
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


class ConfigError(ValueError):
    """The configuration cannot be used; the text says which setting and why."""


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True,
        description="Connect to a broker. false for sites without one: the agent serves what `edge-agent apply` "
        "(the Ansible push channel) installs, and reports through the playbook's results.",
    )
    host: str = Field(default="127.0.0.1", description="MQTT broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="MQTT broker port.")
    username: str | None = Field(default=None, description="MQTT user name (normally the device id).")
    password: SecretStr | None = Field(default=None, description="MQTT password for `username`.")
    topic_prefix: str = Field(default="edge", min_length=1, description="First topic level of every topic.")
    protocol: MqttProtocol = Field(
        default=MqttProtocol.AUTO,
        description="MQTT version: `5`, `3.1.1`, or `auto` (try 5, fall back to 3.1.1 if the broker refuses).",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive interval in seconds.")
    tls_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the broker's TLS certificate; null = plain TCP."
    )


_KIB, _GIB = 1024, 1024 * 1024 * 1024


class ServingSettings(BaseModel):
    """The inference API and the bounds on what its clients may make the agent hold (docs/security.md)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address the inference API listens on.")
    port: int = Field(default=8500, ge=0, le=65535, description="Port of the inference API (KServe v2).")
    advertise_url: str | None = Field(
        default=None, description="URL reported to the control plane; default http://{host}:{port}."
    )
    max_body_bytes: int = Field(
        default=ServingLimits.max_body_bytes,
        ge=_KIB,
        le=4 * _GIB,
        description="Largest request body with binary tensors (Inference-Header-Content-Length), 1 KiB-4 GiB; "
        "over it: 413 before a byte is read.",
    )
    max_json_bytes: int = Field(
        default=ServingLimits.max_json_bytes,
        ge=_KIB,
        le=_GIB,
        description="Largest JSON body, or JSON header of a binary one, 1 KiB-1 GiB and at most max_body_bytes; "
        "parsed JSON takes about ten times its size in memory.",
    )
    max_elements: int = Field(
        default=ServingLimits.max_elements,
        ge=1,
        le=1_000_000_000,
        description="Most elements one input tensor may have (the product of its shape), checked before any "
        "array is made; over it: 400.",
    )
    large_request_bytes: int = Field(
        default=ServingLimits.large_request_bytes,
        ge=_KIB,
        le=4 * _GIB,
        description="A body over this size (or chunked, of unknown size) is large: it needs one of "
        "max_large_requests places to be read. At most max_body_bytes.",
    )
    max_large_requests: int = Field(
        default=ServingLimits.max_large_requests,
        ge=1,
        le=1024,
        description="Large bodies read at once, 1-1024; one more is answered 503 with Retry-After before its body "
        "is read. Together they hold at most max_large_requests x max_body_bytes.",
    )
    body_timeout_s: float = Field(
        default=ServingLimits.body_timeout_s,
        ge=1,
        le=3600,
        description="Seconds a request body may take to arrive, 1-3600; later: 408, and its memory is freed.",
    )

    @model_validator(mode="after")
    def _limits_fit(self) -> ServingSettings:
        for name in ("max_json_bytes", "large_request_bytes"):
            if getattr(self, name) > self.max_body_bytes:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be at most max_body_bytes ({self.max_body_bytes})"
                )
        return self

    def url(self) -> str:
        return self.advertise_url or f"http://{self.host}:{self.port}"

    def limits(self) -> ServingLimits:
        return ServingLimits(
            max_elements=self.max_elements,
            max_json_bytes=self.max_json_bytes,
            max_body_bytes=self.max_body_bytes,
            large_request_bytes=self.large_request_bytes,
            max_large_requests=self.max_large_requests,
            body_timeout_s=self.body_timeout_s,
        )


class DownloadSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=30, gt=0, description="Connect/read timeout of one artifact request.")
    max_attempts: int = Field(
        default=5, ge=1, le=100, description="Attempts per artifact; each retry resumes with HTTP Range."
    )


class DeadlineSettings(BaseModel):
    """How long each device step of an apply may take; an exceeded deadline fails the apply with the reason
    (`deadline exceeded in load after 300 s`) and the previous model keeps serving."""

    model_config = ConfigDict(extra="forbid")

    download_s: float = Field(default=600, gt=0, description="Seconds to fetch one artifact, every retry included.")
    verify_s: float = Field(default=120, gt=0, description="Seconds to hash one artifact or installed slot.")
    load_s: float = Field(default=300, gt=0, description="Seconds to load a model into the runtime.")
    self_test_s: float = Field(default=120, gt=0, description="Seconds to run a model's self-test.")

    def to_core(self) -> Deadlines:
        return Deadlines(self.download_s, self.verify_s, self.load_s, self.self_test_s)


class TunnelSettings(BaseModel):
    """The one outbound connection to the control plane's tunnel gateway (docs/tunnels.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="Keep a tunnel to the gateway (needs device_key_file, and the gateway's host key: from "
        "enrollment (tunnel.gateway) or tunnel.host_key).",
    )
    host: str = Field(
        default="127.0.0.1",
        max_length=255,
        description="Tunnel gateway host name or address. Default: tunnel.gateway's, else 127.0.0.1.",
    )
    port: int = Field(
        default=2222, ge=1, le=65535, description="Tunnel gateway SSH port. Default: tunnel.gateway's, else 2222."
    )
    host_key: str | None = Field(
        default=None,
        max_length=512,
        description="The gateway's public host key, pinned ('ssh-ed25519 AAAA...': `edgectl tunnel-gateway "
        "--print-host-key`); any other key is refused. Default: tunnel.gateway's (from enrollment).",
    )
    gateway: TunnelEndpoint | None = Field(
        default=None,
        description="Written by `edge-agent enroll`: the gateway {host, port, host_key} the control plane "
        "announced. tunnel.host, tunnel.port and tunnel.host_key, when set, win over it.",
    )
    expose_inference: bool = Field(
        default=True, description="Expose this agent's inference API (serving.host:port) as service `kserve`."
    )
    services: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description='More local services to expose: name -> HOST:PORT, e.g. {"ssh": "127.0.0.1:22"}. The gateway '
        "accepts only the names it allocates (its tunnel.services).",
    )
    cloud_services: dict[str, int] = Field(
        default_factory=dict,
        max_length=32,
        description='Cloud services edge applications reach at 127.0.0.1:PORT, e.g. {"registry": 15000}; the '
        "gateway allows only those on its allow-list.",
    )
    keepalive_interval_s: float = Field(
        default=15.0, gt=0, le=3600, description="SSH keepalive interval; 3 missed answers drop the link."
    )
    connect_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="Give up one attempt to connect and log in to the gateway after this."
    )
    health_interval_s: float = Field(
        default=60.0,
        ge=1,
        le=86400,
        description="How often the link's round trip is measured, and the least time between two reported states "
        "that only change its counters (bytes, reconnects, round trip); connecting or dropping is reported at once.",
    )

    def endpoint(self) -> tuple[str, int, str | None]:
        """(host, port, host key) of the gateway: what is set here, else what enrollment wrote (tunnel.gateway)."""
        given, enrolled = self.model_fields_set, self.gateway
        host = self.host if "host" in given or enrolled is None else enrolled.host
        port = self.port if "port" in given or enrolled is None else enrolled.port
        host_key = self.host_key if self.host_key is not None or enrolled is None else enrolled.host_key
        return host, port, host_key

    @field_validator("services", "cloud_services")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _SERVICE_NAME.fullmatch(name):
                raise ValueError(
                    f"service name {name!r}: 1-32 lower-case letters, digits or '-', starting with a letter"
                )
        return value

    @field_validator("services")
    @classmethod
    def _addresses(cls, value: dict[str, str]) -> dict[str, str]:
        for name, address in value.items():
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"services.{name}: {address!r} is not HOST:PORT")
        return value

    @field_validator("cloud_services")
    @classmethod
    def _ports(cls, value: dict[str, int]) -> dict[str, int]:
        for name, port in value.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"cloud_services.{name}: port {port} is not 1-65535")
        return value


class AgentConfig(BaseSettings):
    """Settings of one edge agent."""

    model_config = SettingsConfigDict(env_prefix="EDGE_AGENT_", env_nested_delimiter="__", extra="forbid")

    device_id: str = Field(description="This device's id; also its MQTT topic level (edge/devices/{id}/...).")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels the agent reports. Only a claim: the control plane's labels (enrollment token presets, "
        "operators) decide which selectors match the device.",
    )
    data_dir: Path = Field(
        default=Path("/var/lib/edge-agent"),
        description="Where the journal, downloads and model slots live; must survive reboots.",
    )
    control_plane_public_key: str = Field(
        description="Pinned base64 raw ed25519 key of the control plane (GET /v1/keys/signing); "
        "desired states that do not verify against it are refused."
    )
    gpu_class: str | None = Field(
        default=None, description="Override the detected GPU class (e.g. cpu-x86_64, jetson-orin)."
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="MQTT connection.")
    serving: ServingSettings = Field(default_factory=ServingSettings, description="Inference API.")
    telemetry_interval_s: float = Field(
        default=10, gt=0, description="Seconds between telemetry messages; also the latency window."
    )
    download: DownloadSettings = Field(default_factory=DownloadSettings, description="Artifact downloads.")
    deadlines: DeadlineSettings = Field(
        default_factory=DeadlineSettings, description="Deadlines on the steps of an apply (download, verify, ...)."
    )
    control_plane_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Base URL of the control plane's REST API (e.g. https://cp.example:8000); needed by `builder`.",
    )
    control_plane_token: SecretStr | None = Field(
        default=None,
        description="This device's bearer token for the control plane: sent with artifact downloads and, with "
        "`builder: true`, on the builder routes (a `device` token, or a `builder` token for a builder device).",
    )
    control_plane_ca_file: Path | None = Field(
        default=None,
        description="CA (PEM) to verify an https:// control plane with: its data_dir/pki/ca.pem. Unset: the system's "
        "roots. Artifact downloads and the builder routes use it.",
    )
    device_key_file: Path | None = Field(
        default=None,
        description="This device's ed25519 private key (PEM, mode 0600), written by `edge-agent enroll`; it proves "
        "the device's identity when it enrolls again or rotates its key. Never sent anywhere.",
    )
    builder: bool = Field(
        default=False,
        description="Volunteer as a build worker for this device's own GPU class: claim builds from the control "
        "plane (POST /v1/builders/claim), build and prove them here, upload the results. Needs control_plane_url.",
    )
    builder_workdir: Path | None = Field(
        default=None, description="Scratch directory for builds when `builder` is true; default {data_dir}/builds."
    )
    tunnel: TunnelSettings = Field(default_factory=TunnelSettings, description="Tunnel to the control plane.")

    @model_validator(mode="after")
    def _builder_needs_url(self) -> AgentConfig:
        if self.builder and not self.control_plane_url:
            raise ValueError("builder: true needs control_plane_url (the REST builder routes live there)")
        return self

    @model_validator(mode="after")
    def _tunnel_needs_keys(self) -> AgentConfig:
        if self.tunnel.enabled and (self.tunnel.endpoint()[2] is None or self.device_key_file is None):
            raise ValueError(
                "tunnel.enabled needs the gateway's host key (written by `edge-agent enroll` when the control plane "
                "sets tunnel.public_host, or tunnel.host_key from `edgectl tunnel-gateway --print-host-key`) and "
                "device_key_file (written by `edge-agent enroll`)"
            )
        return self

    def builds_dir(self) -> Path:
        return self.builder_workdir or self.data_dir / "builds"

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        return validate_device_id(value)

    @field_validator("control_plane_public_key")
    @classmethod
    def _public_key(cls, value: str) -> str:
        return valid_public_key(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first. The environment overrides the file (deployment tooling sets secrets through the environment
        # without rewriting the file), and also values given in code, as it always has.
        return env_settings, init_settings, _ConfigFile(settings_cls, _CONFIG_FILE.get())


# The file a `load_config` call reads, for that call only: pydantic-settings asks the class for its sources.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("agent_config_file", default=None)


class _ConfigFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, reading the file itself to refuse with a `ConfigError` one that cannot be
    read, is not YAML, or does not hold a mapping of settings (the library takes any empty value for an empty file)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            with file_path.open(encoding="utf-8") as stream:
                loaded = yaml.safe_load(stream)
        except OSError as exc:
            raise ConfigError(_unreadable(file_path, exc)) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file_path} is not valid YAML: {exc}") from exc
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file_path} must hold a mapping of settings, not {type(loaded).__name__}")
        return loaded


def load_config(path: Path | None) -> AgentConfig:
    """Settings from `path` (may be None: environment only), or ConfigError with a readable reason."""
    if path is not None:
        try:  # the YAML source skips a file it cannot find; one the operator named must be there
            path.open("rb").close()
        except OSError as exc:
            raise ConfigError(_unreadable(path, exc)) from exc
    reading = _CONFIG_FILE.set(path)
    try:
        return AgentConfig()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    finally:
        _CONFIG_FILE.reset(reading)


def _unreadable(path: Path | Traversable, exc: OSError) -> str:
    return f"cannot read config file {path}: {exc.strerror or exc}"


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f"in {path}" if path else "in the environment"
    lines = [f"invalid agent configuration {where}:"]
    lines.extend(f"  {describe_error(error)}" for error in exc.errors())
    return "\n".join(lines)


def settings_help() -> str:
    """Every setting with its type, default and description, as `edge-agent config-help` prints it."""
    lines = ["Settings (YAML keys; environment: EDGE_AGENT_<KEY>, nested with __, e.g. EDGE_AGENT_MQTT__PORT):"]
    lines.extend(_model_help(AgentConfig, ""))
    return "\n".join(lines)


def _model_help(model: type[BaseModel], prefix: str) -> list[str]:
    lines: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"  {prefix}{name}: {field.description}")
            lines.extend(_model_help(annotation, f"{prefix}{name}."))
            continue
        if field.is_required():
            default = "required"
        else:
            default = f"default {_default_text(field.get_default(call_default_factory=True))}"
        lines.append(f"  {prefix}{name} ({default}): {field.description}")
    return lines


def _default_text(value: Any) -> str:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return repr(value.value)
    return "null" if value is None else repr(value)
