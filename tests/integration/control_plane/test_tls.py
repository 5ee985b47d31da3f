"""TLS end to end with the control plane's own CA: HTTPS for the API and artifact downloads, MQTT over TLS to a
real Mosquitto whose certificate `edgectl certs issue` made, a real agent that pins the CA, and what a client that
does not trust the CA (or speaks plain text) does NOT get."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.agent.harness import AgentProcess
from tests.integration.rollouts.fleet import fleet_serves
from tests.integration.rollouts.models import inputs_only, linear, push_and_build
from tests.support import (
    EDGECTL,
    ControlPlaneProcess,
    Mosquitto,
    enroll_device,
    free_port,
    mint_token,
    mosquitto_available,
    password_for,
    python_env,
    wait_for,
)
from tests.unit.agent.builders import write_config

pytestmark = pytest.mark.integration


@dataclass
class TlsMosquitto(Mosquitto):
    """The test broker with its listener on TLS only, serving a certificate from the control plane's CA."""

    certs: Path = field(default_factory=Path)

    def write_config(self) -> Path:
        conf = super().write_config()
        files = {"cafile": "ca.pem", "certfile": "broker.pem", "keyfile": "broker-key.pem"}
        tls = "".join(f"{option} {self.certs / name}\n" for option, name in files.items())
        lines = conf.read_text().splitlines(keepends=True)
        conf.write_text(lines[0] + tls + "".join(lines[1:]))  # the TLS options belong to the listener line
        return conf


@dataclass
class TlsWorld:
    broker: TlsMosquitto
    control_plane: ControlPlaneProcess
    ca: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsWorld]:
    if not mosquitto_available():
        pytest.fail("mosquitto is not installed (.ci/run installs it)")
    root = tmp_path_factory.mktemp("tls")
    data_dir, certs = root / "cp-data", root / "broker-certs"
    issued = subprocess.run(
        [EDGECTL, "certs", "issue", "broker", "--host", "127.0.0.1", "--host", "localhost",
         "--out", str(certs), "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=python_env(), timeout=60,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    ca = data_dir / "pki" / "ca.pem"
    broker = TlsMosquitto(workdir=root / "broker", certs=certs)
    broker.start()
    control_plane = ControlPlaneProcess(broker, data_dir, ca_file=ca, extra_env={"EDGE_CP_MQTT__TLS_CA_FILE": str(ca)})
    try:
        control_plane.start()  # healthy = answers over HTTPS verified against the CA, connected to MQTT over TLS
        yield TlsWorld(broker, control_plane, ca)
    finally:
        control_plane.stop()
        broker.stop()


def test_the_api_serves_https_that_only_the_ca_vouches_for(world: TlsWorld) -> None:
    url = world.control_plane.url
    assert url.startswith("https://")
    with world.control_plane.client() as api:
        assert api.get("/v1/whoami").json()["role"] == "admin"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/healthz")  # the system's roots do not know the control plane's CA
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{world.control_plane.port}/healthz", timeout=5)  # no plain text
    cert = x509.load_pem_x509_certificate((world.control_plane.data_dir / "pki" / "api.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert (world.control_plane.data_dir / "pki" / "ca-key.pem").stat().st_mode & 0o777 == 0o600


def test_edgectl_verifies_the_api_with_the_ca_file(world: TlsWorld) -> None:
    base = [EDGECTL, "--url", world.control_plane.url]
    trusted = subprocess.run([*base, "--ca-file", str(world.ca), "--json", "whoami"], capture_output=True, text=True,
                             env=python_env(), timeout=60)  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["role"] == "admin"
    untrusted = subprocess.run([*base, "whoami"], capture_output=True, text=True, env=python_env(), timeout=60)
    assert untrusted.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def test_the_broker_speaks_only_tls(world: TlsWorld) -> None:
    def connects(tls: ssl.SSLContext | None) -> bool:
        done = threading.Event()
        codes: list[int] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tls-probe")
        client.username_pw_set("dev-1", password_for("dev-1"))
        if tls is not None:
            client.tls_set_context(tls)
        client.on_connect = lambda _c, _u, _f, code, _p: (codes.append(code.value), done.set())
        client.on_disconnect = lambda *_a: done.set()
        try:
            client.connect(world.broker.host, world.broker.port)
        except (OSError, ssl.SSLError):
            return False
        client.loop_start()
        try:
            done.wait(5)
            return codes == [0]
        finally:
            client.disconnect()
            client.loop_stop()

    assert connects(ssl.create_default_context(cafile=str(world.ca)))
    assert not connects(None)  # plain MQTT on the TLS listener never gets a CONNACK


def test_an_agent_pinning_the_ca_installs_and_serves_over_tls(world: TlsWorld, tmp_path: Path) -> None:
    with world.control_plane.client() as api:
        public_key = api.get("/v1/keys/signing").json()["public_key"]
        enroll_device(api, "dev-11", labels={"site": "tls"})  # only enrolled devices' reports are taken
        config = write_config(
            tmp_path / "agent.yaml",
            tmp_path / "data",
            public_key,
            device_id="dev-11",
            labels={"site": "tls"},
            mqtt={"host": "127.0.0.1", "port": world.broker.port, "username": "dev-11",
                  "password": password_for("dev-11"), "tls_ca_file": str(world.ca)},
            serving={"host": "127.0.0.1", "port": free_port()},
            control_plane_token=mint_token(api, "device", "agent-dev-11", "dev-11"),
            control_plane_ca_file=str(world.ca),
        )  # fmt: skip
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        try:
            wait_for(lambda: api.get("/v1/devices/dev-11").json()["reported"], timeout=30, what="dev-11 over TLS")
            push_and_build(api, "tls-model", linear(1), inputs_only())
            body = {"model": "tls-model", "version": 1, "selector": {"labels": {"site": "tls"}}}
            assert api.post("/v1/rollouts", json=body).status_code == 201
            wait_for(
                lambda: fleet_serves(api, "tls-model", 1, ("dev-11",)),
                timeout=60,
                what=f"dev-11 serving over TLS; agent log:\n{agent.output()[-2000:]}",
            )
        finally:
            agent.terminate()
