"""The composition root's own decisions (control_plane/runtime/): the startup log level of an unadministered
broker, what every playbook run and every enrolled device is told, and the order of shutdown and reconnect."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest

from control_plane.domain.broker_identity import BrokerAdmin
from control_plane.runtime import Runtime
from control_plane.runtime.broker import admin_log_level
from control_plane.runtime.builds import eval_limits, queue_settings
from control_plane.runtime.fleet import on_broker_connected
from control_plane.runtime.identity import identity_policy
from control_plane.runtime.playbooks import ansible_settings
from control_plane.settings import Environment, ServerSettings
from edge_agent.protocol import Signer

CP_URL = "http://cp.example:8080"


@pytest.mark.parametrize(
    ("environment", "admin", "level"),
    [
        pytest.param(Environment.PRODUCTION, BrokerAdmin.NONE, logging.WARNING, id="production-unadministered-warns"),
        pytest.param(Environment.PRODUCTION, BrokerAdmin.DYNSEC, logging.INFO, id="production-dynsec"),
        pytest.param(Environment.DEVELOPMENT, BrokerAdmin.NONE, logging.INFO, id="development-unadministered"),
        pytest.param(Environment.DEVELOPMENT, BrokerAdmin.DYNSEC, logging.INFO, id="development-dynsec"),
    ],
)
def test_admin_log_level(environment: Environment, admin: BrokerAdmin, level: int) -> None:
    assert admin_log_level(environment, admin) == level


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(
            {},
            {"edge_control_plane_url": CP_URL, "edge_control_plane_public_key": "KEY"},
            id="defaults-from-the-control-plane",
        ),
        pytest.param(
            {"edge_control_plane_url": "https://other:9", "site": "a"},
            {"edge_control_plane_url": "https://other:9", "edge_control_plane_public_key": "KEY", "site": "a"},
            id="ansible-vars-override-and-add",
        ),
        pytest.param(
            {"edge_control_plane_public_key": "PINNED"},
            {"edge_control_plane_url": CP_URL, "edge_control_plane_public_key": "PINNED"},
            id="ansible-vars-override-the-key",
        ),
    ],
)
def test_ansible_settings(given: dict[str, Any], expected: dict[str, Any]) -> None:
    settings = ServerSettings(public_url=CP_URL, ansible={"vars": given})
    assert ansible_settings(settings, "KEY").vars == expected
    assert settings.ansible.vars == given  # the settings themselves are left as they were


@pytest.mark.parametrize(
    ("enrollment", "expected"),
    [
        pytest.param({}, ("broker.internal", 1883), id="devices-use-the-control-planes-broker-address"),
        pytest.param(
            {"broker_host": "mqtt.example", "broker_port": 8883}, ("mqtt.example", 8883), id="enrollment-overrides"
        ),
        pytest.param({"broker_port": 8883}, ("broker.internal", 8883), id="port-alone"),
    ],
)
def test_identity_policy_broker_address(enrollment: dict[str, Any], expected: tuple[str, int]) -> None:
    signer = Signer.generate()
    settings = ServerSettings(
        mqtt={"host": "broker.internal", "port": 1883, "topic_prefix": "plant"}, enrollment=enrollment
    )
    policy = identity_policy(settings, signer)
    assert (policy.mqtt_host, policy.mqtt_port) == expected
    assert policy.control_plane_public_key == signer.public_key_b64
    assert policy.topic_prefix == "plant"
    assert policy.broker_ca_pem is None


def test_identity_policy_hands_out_the_broker_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings = ServerSettings(mqtt={"tls_ca_file": ca})
    assert identity_policy(settings, Signer.generate()).broker_ca_pem == ca.read_text()


def test_limits_come_from_the_settings() -> None:
    settings = ServerSettings(
        public_url=CP_URL, model_eval_timeout_s=7, build_eval_timeout_s=70, build_lease_s=90, max_upload_bytes=1 << 20
    )
    limits = eval_limits(settings)
    assert (limits.timeout_s, limits.long_timeout_s) == (7, 70)
    assert limits.memory_bytes == settings.model_eval_memory_bytes
    queue = queue_settings(settings)
    assert (queue.base_url, queue.lease_s, queue.max_artifact_bytes, queue.reproof_timeout_s) == (
        CP_URL,
        90,
        1 << 20,
        7,
    )


class Recorder:
    """Stands in for every part of a Runtime and records which of its stop methods ran, in order."""

    def __init__(self, calls: list[str], name: str) -> None:
        self._calls, self._name = calls, name

    def stop(self) -> None:
        self._calls.append(f"{self._name}.stop")

    def shutdown(self) -> None:
        self._calls.append(f"{self._name}.shutdown")

    def reconcile_soon(self) -> None:
        self._calls.append(f"{self._name}.reconcile_soon")

    def republish_soon(self) -> None:
        self._calls.append(f"{self._name}.republish_soon")


def test_close_stops_the_workers_then_the_link_then_the_database() -> None:
    calls: list[str] = []
    parts = {
        name: cast(Any, Recorder(calls, name))
        for name in Runtime.__dataclass_fields__
        if name not in {"settings", "dispose_database"}
    }
    runtime = Runtime(settings=ServerSettings(), dispose_database=lambda: calls.append("database"), **parts)
    runtime.close()
    assert calls == [
        "builders.stop",
        "executor.stop",
        "playbook_runs.shutdown",
        "device_access.stop",
        "link.stop",
        "fleet.stop",  # the ingest writer stores what the link handed over before it stopped
        "training.shutdown",
        "tunnel_sessions.shutdown",  # records how the sessions still open ended, while the database is there
        "database",
    ]


def test_a_broker_connect_reconciles_accounts_before_republishing() -> None:
    calls: list[str] = []
    on_broker_connected(cast(Any, Recorder(calls, "access")), cast(Any, Recorder(calls, "executor")))
    assert calls == ["access.reconcile_soon", "executor.republish_soon"]
