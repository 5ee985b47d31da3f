"""The tunnel gateway's pure decisions: who gets in, which open tunnels close, where services listen, where a
device's direct connections may go. No SSH here (tests/integration/control_plane/test_tunnel_gateway.py has it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from control_plane.domain.tunnels import (
    Admission,
    Refusal,
    Verdict,
    cloud_service,
    judge,
    parse_address,
    refusal,
    service_socket,
)
from control_plane.services.tunnels import TunnelAccessService, TunnelPolicy

KEY, OTHER = "A" * 43 + "=", "B" * 43 + "="
NOW = datetime(2026, 1, 1, tzinfo=UTC)
GRACE = timedelta(seconds=300)


@pytest.mark.parametrize(
    ("admission", "offered", "expected"),
    [
        pytest.param(Admission("d", KEY, False), KEY, None, id="enrolled-key"),
        pytest.param(Admission("d", KEY, False), OTHER, Refusal.WRONG_KEY, id="another-key"),
        pytest.param(Admission("d", KEY, True), KEY, Refusal.REVOKED, id="revoked"),
        pytest.param(Admission("d", None, False), KEY, Refusal.NOT_ENROLLED, id="pending"),
        pytest.param(None, KEY, Refusal.UNKNOWN_DEVICE, id="unknown"),
    ],
)
def test_who_gets_in(admission: Admission | None, offered: str, expected: Refusal | None) -> None:
    assert refusal(admission, offered) == expected


@pytest.mark.parametrize(
    ("admission", "rotated_since", "expected"),
    [
        pytest.param(Admission("d", KEY, False), None, Verdict.KEEP, id="same-key"),
        pytest.param(Admission("d", OTHER, False), None, Verdict.GRACE, id="rotation-seen-first"),
        pytest.param(Admission("d", OTHER, False), NOW - GRACE / 2, Verdict.GRACE, id="rotation-within-grace"),
        pytest.param(Admission("d", OTHER, False), NOW - GRACE, Verdict.CLOSE, id="rotation-grace-over"),
        pytest.param(Admission("d", KEY, True), None, Verdict.CLOSE, id="revoked"),
        pytest.param(Admission("d", OTHER, True), NOW, Verdict.CLOSE, id="revoked-during-rotation"),
        pytest.param(None, None, Verdict.CLOSE, id="forgotten"),
    ],
)
def test_what_a_recheck_does_with_an_open_tunnel(
    admission: Admission | None, rotated_since: datetime | None, expected: Verdict
) -> None:
    assert judge(admission, KEY, rotated_since, NOW, GRACE).verdict is expected


def test_a_socket_path_is_the_devices_own_and_always_fits_a_socket_address() -> None:
    run = Path("/run/edge-tunnels")
    assert service_socket(run, "dev-a", "kserve") == run / "dev-a.kserve.sock"
    assert service_socket(run, "dev-a", "kserve") != service_socket(run, "dev-b", "kserve")
    long_a, long_b = "a" * 128, "a" * 127 + "b"
    assert len(str(service_socket(run, long_a, "kserve"))) <= 100
    assert service_socket(run, long_a, "kserve") != service_socket(run, long_b, "kserve")
    assert service_socket(run, long_a, "kserve").parent == run


@pytest.mark.parametrize("name", ["../x", "Kserve", "a/b", "", "x" * 33, "-ssh"])
def test_a_service_name_cannot_name_a_path(name: str) -> None:
    with pytest.raises(ValueError, match="service name"):
        service_socket(Path("/run"), "dev", name)


def test_a_device_reaches_only_named_cloud_services() -> None:
    allowed = {"registry": ("10.0.0.5", 5000)}
    assert cloud_service(allowed, "registry") == ("10.0.0.5", 5000)
    assert cloud_service(allowed, "10.0.0.5") is None
    assert cloud_service(allowed, "metadata") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("10.0.0.5:5000", ("10.0.0.5", 5000), id="ipv4"),
        pytest.param("[::1]:8080", ("::1", 8080), id="ipv6"),
        pytest.param("registry.internal:443", ("registry.internal", 443), id="name"),
    ],
)
def test_cloud_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["10.0.0.5", ":80", "host:0", "host:70000", "host:http"])
def test_bad_cloud_addresses_are_refused_with_the_form_expected(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_address(text)


class Records:
    def __init__(self, rows: dict[str, Admission]) -> None:
        self.rows = rows
        self.asked: list[list[str]] = []

    def admissions(self, device_ids: object) -> dict[str, Admission]:
        ids = sorted(device_ids)  # type: ignore[call-overload]
        self.asked.append(ids)
        return {d: self.rows[d] for d in ids if d in self.rows}


def test_a_recheck_asks_once_for_all_open_tunnels_and_closes_only_the_revoked() -> None:
    records = Records({"a": Admission("a", KEY, True), "b": Admission("b", KEY, False)})
    now = [NOW]
    service = TunnelAccessService(records, TunnelPolicy(Path("/run"), frozenset(), {}, GRACE), lambda: now[0])
    assert service.recheck({"a": KEY, "b": KEY, "gone": KEY}) == {
        "a": Refusal.REVOKED.value,
        "gone": Refusal.UNKNOWN_DEVICE.value,
    }
    assert records.asked == [["a", "b", "gone"]]


def test_a_rotated_key_keeps_its_tunnel_for_the_grace_then_it_closes() -> None:
    records = Records({"r": Admission("r", OTHER, False)})
    now = [NOW]
    service = TunnelAccessService(records, TunnelPolicy(Path("/run"), frozenset(), {}, GRACE), lambda: now[0])
    assert service.recheck({"r": KEY}) == {}
    assert service.in_grace == {"r"}
    now[0] = NOW + GRACE
    assert "grace" in service.recheck({"r": KEY})["r"]


@pytest.mark.parametrize("device_id", ["../../etc", "a b", "", "x" * 200])
def test_a_login_name_that_is_not_a_device_id_is_refused_before_any_lookup(device_id: str) -> None:
    records = Records({})
    service = TunnelAccessService(records, TunnelPolicy(Path("/run"), frozenset(), {}, GRACE), lambda: NOW)
    assert service.admit(device_id, KEY) is not None
    assert records.asked == []
