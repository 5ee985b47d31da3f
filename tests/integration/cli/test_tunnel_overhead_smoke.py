"""CI's smoke of the tunnel benchmark (benchmarks/tunnel_overhead.py) at a tiny size: `edgectl server`,
`edgectl tunnel-gateway`, an edge device and five idle ones enrolled through the API, each on the agent's own link.

The benchmark checks what it moves itself (every inference answer through the tunnel equals the direct one, every
transferred byte is the one sent, every idle device's socket appears at the gateway) and exits non-zero otherwise.
What is asserted here is what its user sees: it finishes and reports each figure through the tunnel beside its
direct baseline. Never a time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import python_env

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "tunnel_overhead.py"
TINY = ["--devices", "5", "--calls", "10", "--fresh-calls", "5", "--transfer-mb", "2", "--transfer-runs", "1"]
LATENCY_ROW = re.compile(r"^(kept-alive|new connection)\s+(direct|tunnel|proxy)\s+\d+\s+\d+", re.MULTILINE)
TRANSFER_ROW = re.compile(r"^(device -> cloud|cloud -> device)\s+(direct|tunnel)\s+\d+\s+\d", re.MULTILINE)


def test_the_benchmark_measures_the_tunnel_beside_loopback_at_a_tiny_size() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--idle-s", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        env=python_env(),
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    out = done.stdout
    rows = set(LATENCY_ROW.findall(out))
    assert {(mode, path) for mode in ("kept-alive", "new connection") for path in ("direct", "tunnel")} <= rows, out
    assert {mode for mode, path in rows if path == "proxy"} == {"kept-alive", "new connection"} or (
        "services/kserve/...): not measured:" in out
    ), out
    transfers = set(TRANSFER_ROW.findall(out))
    assert transfers == {(way, path) for way in ("device -> cloud", "cloud -> device") for path in ("direct", "tunnel")}
    assert "(5 of 5 links connected and 5 sockets at the end of the samples)" in out, out
