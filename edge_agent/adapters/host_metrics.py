"""Device CPU and memory use from /proc (no psutil). Unreadable files give None, never an error."""

from __future__ import annotations

import re
from pathlib import Path

from edge_agent.protocol import DeviceTelemetry


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def parse_cpu_times(stat: str) -> tuple[int, int] | None:
    """(busy, total) jiffies from the `cpu` line of /proc/stat."""
    for line in stat.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return sum(values) - idle, sum(values)
    return None


def parse_memory_percent(meminfo: str) -> float | None:
    total = re.search(r"^MemTotal:\s+(\d+)", meminfo, re.MULTILINE)
    available = re.search(r"^MemAvailable:\s+(\d+)", meminfo, re.MULTILINE)
    if not total or not available or int(total.group(1)) == 0:
        return None
    return round(100.0 * (1 - int(available.group(1)) / int(total.group(1))), 1)


class HostMetrics:
    """CPU use since the previous sample (the telemetry interval), memory use now."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._last: tuple[int, int] | None = None

    def sample(self) -> DeviceTelemetry:
        return DeviceTelemetry(cpu_percent=self._cpu_percent(), memory_percent=self._memory_percent())

    def _cpu_percent(self) -> float | None:
        text = _read(self._proc / "stat")
        now = parse_cpu_times(text) if text else None
        last, self._last = self._last, now
        if now is None or last is None or now[1] <= last[1]:
            return None
        return round(100.0 * (now[0] - last[0]) / (now[1] - last[1]), 1)

    def _memory_percent(self) -> float | None:
        text = _read(self._proc / "meminfo")
        return parse_memory_percent(text) if text else None
