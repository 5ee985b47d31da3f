"""Public schemas of the fleet: devices as last reported, their events and telemetry, and an operator's
enrollment of a device (channel, labels, GPU class, hardware, how Ansible reaches it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from control_plane.api.schemas.base import Out, with_fields
from control_plane.domain.fleet import DeviceView, EventSource, Presence
from control_plane.domain.playbooks import AnsibleConnection
from edge_agent.protocol import HardwareFacts, ReportedState
from edge_agent.protocol.messages import LabelKey, LabelValue, Name
from edge_agent.protocol.vocabulary import Channel


class AnsibleConnectionIO(BaseModel):
    """How Ansible reaches the device: its inventory variables (ansible_host, _port, _user, _connection,
    ansible_python_interpreter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Each value becomes an inventory variable: none may start like an ssh option ("-oProxyCommand=...") or hold a
    # template; there is no field for ssh arguments at all (those are the operator's `ansible.ssh_args`).
    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*$",
        description="Default: the id.",
    )
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
    connection: Literal["ssh", "local", "tunnel"] = Field(
        default="ssh",
        description="tunnel: ssh through the device's tunnel to its exposed `ssh` service, for a device no "
        "address reaches (host and port then play no part; docs/tunnels.md).",
    )
    python: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z0-9_./+~][A-Za-z0-9_./+~-]*$",
        description="ansible_python_interpreter: a path (or auto, auto_silent).",
    )

    def to_domain(self) -> AnsibleConnection:
        return AnsibleConnection(**self.model_dump())

    @classmethod
    def of(cls, c: AnsibleConnection) -> AnsibleConnectionIO:
        known: dict[str, Literal["ssh", "local", "tunnel"]] = {"local": "local", "tunnel": "tunnel"}
        connection = known.get(c.connection, "ssh")
        # Not validated again: a connection stored under an older, looser pattern is still shown.
        return cls.model_construct(host=c.host, port=c.port, user=c.user, connection=connection, python=c.python)


class EnrollmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel = Channel.ANSIBLE
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)
    gpu_class: Name | None = Field(default=None, description="Default: the class of `hardware`, when given.")
    hardware: HardwareFacts | None = None
    ansible: AnsibleConnectionIO | None = Field(default=None, description="Default on the Ansible channel: ssh to ID.")


class DeliveryFailureOut(Out):
    generation: int
    reason: str
    at: datetime


class TelemetryWindowOut(Out):
    model: str
    version: int
    at: datetime
    window_s: float
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


# Read from a DeviceView: the device's own fields, its presence and (for one device) its telemetry.
class DeviceOut(Out):
    id: str
    presence: Presence
    last_seen: datetime | None
    channel: Channel
    gpu_class: str | None
    labels: dict[str, str]
    hardware: HardwareFacts | None
    reported: ReportedState | None
    desired_generation: int
    telemetry: list[TelemetryWindowOut] = Field(
        default_factory=list, description="Recent telemetry windows per model version, newest first."
    )
    ansible: AnsibleConnectionIO | None = None
    delivery_failure: DeliveryFailureOut | None = None

    @model_validator(mode="before")
    @classmethod
    def _of_view(cls, value: Any) -> Any:
        if isinstance(value, DeviceView):
            return with_fields(value.device, presence=value.presence, telemetry=value.telemetry)
        return value

    @field_validator("ansible", mode="before")
    @classmethod
    def _shown_as_stored(cls, value: Any) -> Any:
        return AnsibleConnectionIO.of(value) if isinstance(value, AnsibleConnection) else value


class DeviceEventOut(Out):
    device_id: str
    generation: int
    step: str
    model: str | None
    version: int | None
    reason: str | None
    at: datetime
    source: EventSource = Field(description="device: what the device sent; control-plane: what was recorded about it.")
