from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Mosquitto, mosquitto_available


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real Mosquitto broker for the whole session (password file + ACL). See tests/support.py."""
    if not mosquitto_available():
        pytest.fail(
            "mosquitto is not installed: .ci/run installs Debian's `mosquitto` package (or: apt-get install mosquitto)"
        )
    broker = Mosquitto(workdir=Path(tmp_path_factory.mktemp("mosquitto")))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
