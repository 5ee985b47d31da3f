"""The MQTT session's pure choices: which versions a `protocol` setting tries, and which probe answers mean the
broker does not speak the version tried (the fallback itself runs against real brokers in
tests/integration/agent/test_mqtt_link.py and tests/integration/control_plane/test_mqtt_link.py)."""

from __future__ import annotations

import pytest

from edge_agent.adapters.mqtt_session import MqttVersion, refuses_version, versions_to_try

V5, V311 = MqttVersion.V5, MqttVersion.V311


@pytest.mark.parametrize(
    ("protocol", "versions"),
    [
        pytest.param("auto", (V5, V311), id="auto-5-then-311"),
        pytest.param("5", (V5,), id="only-5"),
        pytest.param("3.1.1", (V311,), id="only-311"),
    ],
)
def test_versions_to_try(protocol: str, versions: tuple[MqttVersion, ...]) -> None:
    assert versions_to_try(protocol) == versions


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="'4'"):
        versions_to_try("4")


@pytest.mark.parametrize(
    ("connack_reason", "refused"),
    [
        pytest.param(None, True, id="dropped-without-connack"),
        pytest.param(0x84, True, id="unsupported-protocol-version"),
        pytest.param(0x00, False, id="accepted"),
        pytest.param(0x86, False, id="bad-credentials-stays"),
        pytest.param(0x87, False, id="not-authorised-stays"),
        pytest.param(0x88, False, id="server-unavailable-stays"),
    ],
)
def test_which_answers_mean_the_broker_does_not_speak_the_version(connack_reason: int | None, refused: bool) -> None:
    assert refuses_version(connack_reason) is refused
