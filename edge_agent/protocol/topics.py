"""MQTT topic names. The prefix is configurable (default `edge`); device ids are validated before use."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_device_id(device_id: str) -> str:
    """Refuse ids that could escape a topic level or a path (`/`, `+`, `#`, `..`, spaces)."""
    if not DEVICE_ID_PATTERN.fullmatch(device_id) or ".." in device_id:
        raise ValueError(
            f"device id {device_id!r} must be 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return device_id


@dataclass(frozen=True)
class Topics:
    prefix: str = "edge"

    def _device(self, device_id: str, leaf: str) -> str:
        return f"{self.prefix}/devices/{validate_device_id(device_id)}/{leaf}"

    def desired(self, device_id: str) -> str:
        return self._device(device_id, "desired")

    def reported(self, device_id: str) -> str:
        return self._device(device_id, "reported")

    def events(self, device_id: str) -> str:
        return self._device(device_id, "events")

    def telemetry(self, device_id: str) -> str:
        return self._device(device_id, "telemetry")

    def status(self, device_id: str) -> str:
        return self._device(device_id, "status")

    def all_devices(self, leaf: str) -> str:
        """Subscription filter for one leaf on every device, e.g. `edge/devices/+/reported`."""
        return f"{self.prefix}/devices/+/{leaf}"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """(device_id, leaf) of a device topic under this prefix, or None."""
        parts = topic.split("/")
        prefix_parts = self.prefix.split("/")
        n = len(prefix_parts)
        if len(parts) != n + 3 or parts[:n] != prefix_parts or parts[n] != "devices":
            return None
        device_id, leaf = parts[n + 1], parts[n + 2]
        if not DEVICE_ID_PATTERN.fullmatch(device_id):
            return None
        return device_id, leaf
