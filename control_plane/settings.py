"""Control-plane settings: built once in `main` (edgectl server / demo) and passed down.

There is no module-level settings instance. Every setting can come from a YAML file
(`edgectl server --config FILE`) or from environment variables with the prefix
`EDGE_CP_` (nested with `__`, e.g. `EDGE_CP_MQTT__PORT=1883`). Environment wins over the file, flags over both;
pydantic-settings merges them (its YAML source reads the file). Secrets are `SecretStr`: nothing here may print
or log their values, and each is unwrapped only where it is handed to a library.
"""

from __future__ import annotations

import errno
import re
from contextvars import ContextVar
from enum import Enum
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from control_plane.domain.broker_identity import BrokerAdmin
from control_plane.domain.identity import HUMAN_ROLES, Role
from control_plane.domain.tunnels import parse_address, validate_service_name
from edge_agent.protocol.vocabulary import MqttProtocol


class Environment(str, Enum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class MqttSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    username: str | None = Field(default=None, description="MQTT user name of the control plane.")
    password: SecretStr | None = Field(default=None, description="MQTT password of the control plane.")
    topic_prefix: str = Field(
        default="edge",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="First topic levels: devices live under PREFIX/devices/{id}/...; agents must use the same.",
    )
    protocol: MqttProtocol = Field(default=MqttProtocol.AUTO, description="MQTT protocol version to speak.")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive interval in seconds.")
    client_id: str = Field(
        default="edge-control-plane", min_length=1, max_length=64, description="MQTT client id of this control plane."
    )
    tls_ca_file: Path | None = Field(default=None, description="CA bundle; setting it turns TLS on.")
    admin: BrokerAdmin = Field(
        default=BrokerAdmin.NONE,
        description="Who administers the broker's accounts. dynsec: this control plane, through Mosquitto's "
        "dynamic-security plugin (one client per device pinned to its client id, revocation disconnects at once; "
        "`username` must be the plugin's admin client). none: the broker's own configuration (a password file, "
        "the demo's embedded broker); revoking a device then does not reach the broker. Production should use dynsec "
        "(docs/security.md, Broker identity).",
    )
    admin_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="How long to wait for the dynamic-security plugin to answer a command."
    )
    admin_keep_clients: list[str] = Field(
        default_factory=list,
        description="Broker clients reconciling leaves alone (a bridge, a break-glass admin); every other client that "
        "is neither this control plane's nor an active device's is deleted.",
    )
    max_inflight_messages: int = Field(
        default=1000,
        ge=1,
        le=65535,
        description="QoS 1 messages this control plane has in flight to the broker at once (paho's default, 20, "
        "paces a rollout's desired states in steps of 20). docs/operations.md, Broker limits at fleet size.",
    )
    max_queued_messages: int = Field(
        default=0, ge=0, description="Outgoing messages the client queues beyond those in flight; 0: no limit."
    )
    ingest_queue: int = Field(
        default=50_000,
        ge=1,
        description="Device messages waiting between the MQTT network thread and the database at most; past it a "
        "message is dropped, counted (GET /v1/status) and its device's retained state fetched again. Keep it above "
        "twice the fleet: a reconnect redelivers every device's retained report and presence at once.",
    )
    ingest_queue_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Bytes of device messages waiting at most (see ingest_queue)."
    )
    ingest_batch: int = Field(
        default=500, ge=1, le=10_000, description="Device messages stored in one database transaction at most."
    )

    @model_validator(mode="after")
    def _admin_needs_a_user(self) -> MqttSettings:
        if self.admin is BrokerAdmin.DYNSEC and not self.username:
            raise ValueError("mqtt.admin dynsec needs mqtt.username: the dynamic-security plugin's admin client")
        return self


def _shipped_playbooks() -> Path:
    """The playbooks that ship with the package: `control_plane/playbooks/`, in a checkout a link to `playbooks/`."""
    return (Path(__file__).parent / "playbooks").resolve()


class AnsibleSettings(BaseModel):
    playbooks_dir: Path = Field(
        default_factory=_shipped_playbooks,
        description="Directory of the playbooks the control plane runs (provision.yml, deploy_model.yml, ...); "
        "nothing outside it is ever run. Default: the playbooks that ship with the package (in a checkout: "
        "playbooks/).",
    )
    private_key_file: Path | None = Field(
        default=None, description="SSH private key Ansible logs in with (ANSIBLE_PRIVATE_KEY_FILE)."
    )
    ssh_args: str | None = Field(
        default=None, description="Extra ssh options for every connection (ANSIBLE_SSH_ARGS), e.g. -o ProxyJump=..."
    )
    forks: int = Field(default=10, ge=1, le=500, description="Hosts one playbook run works on in parallel.")
    workers: int = Field(default=2, ge=1, le=64, description="Playbook runs at the same time; later ones queue.")
    keep_runs: int = Field(
        default=50, ge=1, le=100_000, description="Run directories kept under data_dir/playbook-runs (newest)."
    )
    timeout_s: int = Field(
        default=3600, ge=1, le=7 * 24 * 3600, description="A playbook run is stopped (failed) after this many seconds."
    )
    vars: dict[str, Any] = Field(
        default_factory=dict, description="Inventory variables for every host (e.g. edge_control_plane_url)."
    )


class OidcSettings(BaseModel):
    """Single sign-on: JWTs from this issuer are accepted as bearer tokens beside the control plane's own."""

    issuer: str | None = Field(default=None, description="Issuer (the JWTs' `iss`); setting it turns SSO on.")
    jwks_url: str | None = Field(default=None, description="URL of the issuer's JSON Web Key Set.")
    audience: str | None = Field(default=None, description="Audience the JWTs must name (`aud`).")
    roles_claim: str = Field(default="roles", description="Claim holding the user's groups or roles.")
    role_map: dict[str, Role] = Field(
        default_factory=dict,
        description="Claim value -> role (viewer, operator, admin), e.g. {edge-admins: admin}; unmapped: refused.",
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256", "EdDSA"], description="Signature algorithms accepted."
    )

    @model_validator(mode="after")
    def _complete(self) -> OidcSettings:
        if self.issuer is not None and (self.jwks_url is None or self.audience is None):
            raise ValueError("oidc.issuer needs oidc.jwks_url and oidc.audience")
        if any(a.upper() == "NONE" or a.upper().startswith("HS") for a in self.algorithms):
            raise ValueError("oidc.algorithms: only asymmetric algorithms (RS*, PS*, ES*, EdDSA)")
        if any(role not in HUMAN_ROLES for role in self.role_map.values()):
            raise ValueError("oidc.role_map: people get viewer, operator or admin")
        return self

    @property
    def enabled(self) -> bool:
        return self.issuer is not None


class EnrollmentSettings(BaseModel):
    """What `POST /v1/enroll` hands an approved device besides its secrets (docs/security.md, Devices)."""

    broker_host: str | None = Field(
        default=None, max_length=255, description="Broker address devices use; default: mqtt.host."
    )
    broker_port: int | None = Field(
        default=None, ge=1, le=65535, description="Broker port devices use; default: mqtt.port."
    )
    retry_after_s: float = Field(
        default=30.0, gt=0, le=3600, description="How long a pending device is told to wait before asking again."
    )


class TrainingSettings(BaseModel):
    """Where training jobs may take code and data from: nothing the API receives ever runs as code.

    A job's `entrypoint` is a path relative to one of `code_dirs` and its `data.path` one relative to one of
    `data_dirs` (docs/api.md, "Training entrypoint contract"); with no code root, training is refused.
    """

    code_dirs: list[Path] = Field(
        default_factory=list,
        description="Training code roots an operator registered; entrypoints are .py files inside them "
        "(JSON list in the environment: EDGE_CP_TRAINING__CODE_DIRS='[\"/srv/training\"]'). Empty: no training.",
    )
    data_dirs: list[Path] = Field(
        default_factory=list,
        description="Training data roots; a job's data.path is a file or folder inside one. Empty: jobs name no data.",
    )


class TlsSettings(BaseModel):
    """HTTPS for the REST API. With `enabled` and no certificate of the operator's, the control plane creates a CA
    on first start (data_dir/pki/ca.pem; agents and edgectl pin it) and issues the API's certificate from it."""

    enabled: bool = Field(default=False, description="Serve the REST API over HTTPS (production requires it).")
    cert_file: Path | None = Field(
        default=None, description="The operator's certificate chain (PEM) instead of one from the built-in CA."
    )
    key_file: Path | None = Field(default=None, description="The private key of cert_file (PEM).")
    hostnames: list[str] = Field(
        default_factory=list,
        description="More names for the generated certificate; `host`, `public_url`'s host and localhost are in it.",
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together")
        return self


class TunnelSettings(BaseModel):
    """The tunnel gateway (`edgectl tunnel-gateway`, docs/tunnels.md): where devices connect, what they may expose
    and reach. It reads the same database as the control plane and admits only enrolled devices by their own key."""

    model_config = ConfigDict(extra="forbid")  # a misspelt tunnel setting must not pass for a secure default
    host: str = Field(default="127.0.0.1", description="Address the tunnel gateway listens on for devices.")
    port: int = Field(default=2222, ge=0, le=65535, description="SSH port of the tunnel gateway (0: any free port).")
    host_key_file: Path | None = Field(
        default=None,
        description="The gateway's ed25519 host key (agents pin its public half). Default: "
        "data_dir/tunnel_host_key, created on first start with mode 0600.",
    )
    run_dir: Path | None = Field(
        default=None,
        description="Where exposed device services listen, as unix sockets DEVICE.SERVICE.sock (mode 0700). "
        "Default: data_dir/tunnels.",
    )
    services: list[str] = Field(
        default_factory=lambda: ["kserve", "metrics", "ssh"],
        max_length=32,
        description="Service names a device may expose (each device only under its own id).",
    )
    cloud_services: dict[str, str] = Field(
        default_factory=dict,
        description="Cloud services devices may reach through their tunnel: name -> HOST:PORT (JSON in the "
        'environment: EDGE_CP_TUNNEL__CLOUD_SERVICES=\'{"registry": "10.0.0.5:5000"}\'). Empty: none.',
    )
    recheck_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often open tunnels are checked against the records (one query per 500 open tunnels): a "
        "revoked device's tunnel closes within this time.",
    )
    rotation_grace_s: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="How long a tunnel opened with a key that was since rotated stays open for its agent to "
        "reconnect with the new key.",
    )
    keepalive_interval_s: float = Field(
        default=15.0, gt=0, le=3600, description="SSH keepalive interval towards each device."
    )
    connect_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="How long the control plane waits to reach a device's service through its tunnel (proxy and "
        "`edgectl tunnel open`); past it: 504.",
    )
    read_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How long the HTTP proxy waits for the next bytes of a device's answer; past it before the "
        "answer started: 504.",
    )
    session_idle_timeout_s: float = Field(
        default=900.0,
        gt=0,
        le=7 * 24 * 3600,
        description="A tunnel session (a proxied request, an `edgectl tunnel open` connection) that carried no byte "
        "for this long is closed (`idle timeout`).",
    )
    session_max_s: float = Field(
        default=8 * 3600.0,
        gt=0,
        le=30 * 24 * 3600,
        description="A tunnel session open this long is closed whatever it carries (`absolute timeout`).",
    )
    public_host: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.:-]*$",
        description="Address devices reach the tunnel gateway at. Set: `edge-agent enroll` gets it with public_port "
        "and the gateway's host key (the public half of host_key_file) and pins that key, so agents need no "
        "hand-copied tunnel.host_key. Unset: enrollment says nothing of the gateway.",
    )
    public_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port devices reach the gateway at. Default: tunnel.port."
    )

    @model_validator(mode="after")
    def _announced_port(self) -> TunnelSettings:
        if self.public_host is not None and self.public_port is None and self.port == 0:
            raise ValueError("tunnel.public_host needs tunnel.public_port when tunnel.port is 0 (any free port)")
        return self

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: list[str]) -> list[str]:
        for name in value:
            validate_service_name(name)
        return value

    @field_validator("cloud_services")
    @classmethod
    def _cloud_addresses(cls, value: dict[str, str]) -> dict[str, str]:
        for name, address in value.items():
            validate_service_name(name)
            parse_address(address)
        return value


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_CP_", env_nested_delimiter="__", extra="forbid")

    environment: Environment = Field(
        default=Environment.DEVELOPMENT,
        description="production refuses plain text and development defaults: it needs tls.enabled (HTTPS), "
        "mqtt.tls_ca_file (MQTT over TLS) and an MQTT password.",
    )
    host: str = Field(default="127.0.0.1", description="Address the REST API listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the REST API listens on.")
    public_url: str | None = Field(
        default=None,
        description="Base URL devices use to reach this server (artifact URLs). Default: http://HOST:PORT.",
    )
    data_dir: Path = Field(default=Path(".edge-cp"), description="Database, artifacts, signing key, job outputs.")
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the database. Default: SQLite in data_dir. PostgreSQL: "
        "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE (a secret: shown only with its password masked).",
    )
    signing_key_file: Path | None = Field(
        default=None, description="ed25519 private key (PEM). Default: data_dir/signing_key.pem, created if absent."
    )
    bootstrap_token: SecretStr | None = Field(
        default=None,
        description="First admin token, used only when the database holds no token yet (at least 32 characters). "
        "Unset: the first start writes a new one to data_dir/admin-token (mode 0600).",
    )
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ansible: AnsibleSettings = Field(default_factory=AnsibleSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    enrollment: EnrollmentSettings = Field(default_factory=EnrollmentSettings)
    tunnel: TunnelSettings = Field(default_factory=TunnelSettings)
    max_upload_bytes: int = Field(
        default=2 * 1024**3,
        gt=0,
        description="Largest model, samples or artifact file accepted by an upload (bytes). An upload is counted "
        "while it streams in and refused with 413 as soon as it passes this; nothing of it is kept.",
    )
    max_body_bytes: int = Field(
        default=4 * 1024**2,
        ge=64 * 1024,
        description="Largest request body that is not a file upload (JSON specs, commands); past it: 413.",
    )
    max_npz_bytes: int = Field(
        default=1024**3,
        gt=0,
        description="Largest uncompressed size of an .npz (samples, calibration, training output), all arrays "
        "together. Checked against the archive's headers before anything is inflated, and counted while reading.",
    )
    max_npz_members: int = Field(default=1024, ge=1, le=1_000_000, description="Most arrays one .npz may hold.")
    model_eval_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=24 * 3600,
        description="Wall-clock limit of one ONNX Runtime evaluation of an uploaded model (reference outputs at "
        "upload, the fp32 reference run of a build). It runs in a child process that is killed past the limit.",
    )
    model_eval_memory_bytes: int = Field(
        default=8 * 1024**3,
        ge=512 * 1024**2,
        description="Address-space limit (RLIMIT_AS) of that child process: a model that needs more fails.",
    )
    build_eval_timeout_s: float = Field(
        default=600.0,
        gt=0,
        le=7 * 24 * 3600,
        description="Wall-clock limit of the in-process builder's longer ONNX Runtime steps (graph optimisation, "
        "int8 calibration, the artifact's parity and latency proof), each in a killable child process.",
    )
    targets_dir: Path | None = Field(
        default=None, description="Extra GPU-class files (*.yaml) added to the built-in catalog."
    )
    training_workers: int = Field(default=2, ge=1, le=64, description="Training jobs run at the same time.")
    build_workers: int = Field(
        default=1, ge=0, le=16, description="In-process build workers (0: builds wait for remote builders)."
    )
    build_lease_s: float = Field(
        default=60.0, gt=0, description="A builder must renew its lease on a build within this many seconds."
    )
    builder_window_s: float = Field(
        default=60.0, gt=0, description="Builders heard from within this many seconds count as present."
    )
    device_offline_after_s: float = Field(
        default=90.0, gt=0, description="A device silent this long without a last will is shown offline."
    )
    device_messages_per_s: float = Field(
        default=5.0,
        gt=0,
        le=10_000,
        description="Sustained MQTT messages per second one device may send (all kinds together); past it, and "
        "past the burst, its messages are dropped before they are parsed, with one warning a minute.",
    )
    device_message_burst: int = Field(
        default=100, ge=1, le=1_000_000, description="Messages one device may send at once after a quiet time."
    )
    device_events_kept: int = Field(
        default=1000,
        ge=10,
        le=1_000_000,
        description="A device's own events kept (newest); the events the control plane records are never trimmed.",
    )

    @model_validator(mode="after")
    def _no_dev_secrets_in_production(self) -> ServerSettings:
        if self.environment is not Environment.PRODUCTION:
            return self
        password = self.mqtt.password.get_secret_value() if self.mqtt.password is not None else None
        if password in (None, "", "changeme"):
            raise ValueError("production needs mqtt.password set (EDGE_CP_MQTT__PASSWORD)")
        if not self.tls.enabled:
            raise ValueError("production refuses plain HTTP: set tls.enabled (EDGE_CP_TLS__ENABLED=true)")
        if self.mqtt.tls_ca_file is None:
            raise ValueError("production refuses plain MQTT: set mqtt.tls_ca_file (EDGE_CP_MQTT__TLS_CA_FILE)")
        if self.public_url is not None and not self.public_url.startswith("https://"):
            raise ValueError("production refuses a plain-HTTP public_url: devices would download over plain text")
        return self

    @model_validator(mode="after")
    def _training_roots_apart_from_data(self) -> ServerSettings:
        """Uploads land under data_dir: a training root there would let an upload run as code."""
        data_dir = self.data_dir.resolve()
        for setting, roots in (("code_dirs", self.training.code_dirs), ("data_dirs", self.training.data_dirs)):
            for root in roots:
                real = root.resolve()
                if not real.is_dir():
                    raise ValueError(f"training.{setting}: {root} is not a folder")
                if real.is_relative_to(data_dir) or data_dir.is_relative_to(real):
                    raise ValueError(f"training.{setting}: {root} overlaps data_dir {self.data_dir}")
        return self

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls.enabled else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    def server_names(self) -> list[str]:
        """What the REST API's generated certificate must name."""
        names = {"localhost", self.host, *self.tls.hostnames}
        if self.public_url:
            names.add(urlparse(self.public_url).hostname or "localhost")
        return sorted(n for n in names if n and n not in ("0.0.0.0", "::"))

    @property
    def resolved_database_url(self) -> str:
        """The URL to open (with its password): hand it to the engine, never to a log."""
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'control-plane.db'}"

    @property
    def database_shown(self) -> str:
        """The database URL as it may be logged or printed: its password masked."""
        return masked_url(self.resolved_database_url)

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or self.data_dir / "signing_key.pem"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def tunnel_host_key_file(self) -> Path:
        return self.tunnel.host_key_file or self.data_dir / "tunnel_host_key"

    @property
    def tunnel_run_dir(self) -> Path:
        return self.tunnel.run_dir or self.data_dir / "tunnels"

    @property
    def playbook_runs_dir(self) -> Path:
        return self.data_dir / "playbook-runs"

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> ServerSettings:
        """File values, then environment, then explicit overrides (CLI flags); each merged into the one below it
        setting by setting (`EDGE_CP_MQTT__PORT` changes the file's mqtt.port and keeps its mqtt.host)."""
        if config_file is not None and not config_file.is_file():
            raise FileNotFoundError(errno.ENOENT, "no such settings file", str(config_file))
        reading = _SETTINGS_FILE.set(config_file)
        try:
            return cls(**overrides)
        finally:
            _SETTINGS_FILE.reset(reading)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: explicit values (the CLI's flags), the environment, then the file `load` was given.
        settings_file = _SettingsFile(settings_cls, _SETTINGS_FILE.get())
        return init_settings, env_settings, dotenv_settings, file_secret_settings, settings_file


def masked_url(url: str) -> str:
    """`url` with its password, and a `password=` query parameter, shown as ***: everything between the user's `:`
    and the last `@` before the query (an unescaped `@` or `/` in a password is masked too)."""
    url = _URL_PASSWORD.sub(r"\g<head>***@", url, count=1)
    return _QUERY_PASSWORD.sub(r"\g<key>***", url)


_URL_PASSWORD = re.compile(r"^(?P<head>[\w+]+://[^:/@]*:)[^?#]*@")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&]password=)[^&#]*", re.IGNORECASE)


# The file a `load` call reads, for that call only: pydantic-settings asks the class, not the call, for its sources.
_SETTINGS_FILE: ContextVar[Path | None] = ContextVar("settings_file", default=None)


class _SettingsFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, reading the file itself to refuse one that is not YAML or not a mapping of
    settings (the library takes any empty value for an empty file)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            with file_path.open(encoding="utf-8") as stream:
                loaded = yaml.safe_load(stream)
        except yaml.YAMLError as exc:
            raise ValueError(f"{file_path}: not valid YAML: {exc}") from exc
        if loaded is None:
            return {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{file_path}: expected a mapping of settings at the top level")
        return loaded
