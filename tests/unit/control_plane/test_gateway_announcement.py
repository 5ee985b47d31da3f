"""The tunnel gateway announced at enrollment (`tunnel.public_host`): what the identity policy carries (the host
key is the one `edgectl tunnel-gateway --print-host-key` prints), to whom it is handed (only to an agent that says
it reads it: an older agent refuses an identity with a field it does not know), and settings that cannot announce
a port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.enrollment_repository import EnrollmentRepository
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.identity_repository import TokenRepository
from control_plane.runtime.identity import identity_policy
from control_plane.runtime.tunnels import host_key_line
from control_plane.services.enrollment import EnrollmentService
from control_plane.services.identity import IdentityService
from control_plane.settings import ServerSettings
from edge_agent.protocol import HardwareFacts, Signer
from edge_agent.protocol.enrollment import signed_request
from edge_agent.protocol.tunnel import TunnelEndpoint

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_no_public_host_announces_no_gateway(tmp_path: Path) -> None:
    policy = identity_policy(ServerSettings(data_dir=tmp_path), Signer.generate())
    assert policy.tunnel is None
    assert not (tmp_path / "tunnel_host_key").exists()  # nothing made for a gateway nobody announces


@pytest.mark.parametrize(
    ("tunnel", "port"),
    [
        pytest.param({"public_host": "gw.example"}, 2222, id="the-gateways-own-port"),
        pytest.param({"public_host": "gw.example", "port": 2200, "public_port": 443}, 443, id="a-public-port"),
    ],
)
def test_the_announced_gateway_carries_the_key_agents_would_copy_by_hand(
    tmp_path: Path, tunnel: dict[str, object], port: int
) -> None:
    settings = ServerSettings(data_dir=tmp_path, tunnel=tunnel)
    announced = identity_policy(settings, Signer.generate()).tunnel
    assert announced == TunnelEndpoint(host="gw.example", port=port, host_key=host_key_line(settings))
    assert (tmp_path / "tunnel_host_key").stat().st_mode & 0o777 == 0o600


def test_a_gateway_on_any_free_port_needs_a_public_port() -> None:
    with pytest.raises(ValidationError, match="public_port"):
        ServerSettings(tunnel={"public_host": "gw.example", "port": 0})


@dataclass
class Plane:
    service: EnrollmentService
    token: str


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    settings = ServerSettings(data_dir=tmp_path, tunnel={"public_host": "gw.example"})
    identity = IdentityService(TokenRepository(engine), lambda: T0)
    policy = identity_policy(settings, Signer.generate())
    fleet = FleetRepository(engine, events_kept=10)
    service = EnrollmentService(EnrollmentRepository(engine), fleet, identity, policy, lambda: T0)
    _, secret = service.create_token("t", "op", auto_approve=True)
    yield Plane(service, secret)
    engine.dispose()


@pytest.mark.parametrize(
    ("accepts", "told"), [pytest.param(True, True, id="new-agent"), pytest.param(False, False, id="older-agent")]
)
def test_only_an_agent_that_reads_the_gateway_is_told_of_it(plane: Plane, accepts: bool, told: bool) -> None:
    caller = plane.service.authenticate(f"Bearer {plane.token}")
    request = signed_request(Signer.generate(), HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64"), T0, "dev-1")
    answer = plane.service.enroll(caller, request, with_tunnel=accepts)
    assert answer.identity is not None
    assert (answer.identity.tunnel is not None) is told
    assert ('"tunnel"' in answer.model_dump_json()) is told  # an older agent never sees the field
