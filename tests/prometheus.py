"""A private Prometheus server for the metrics tests: Debian's `prometheus` binary (installed by .ci/run), run as
our own process with a temporary config and data directory on a free loopback port, stopped by its PID. The
package's own service is never used. `promtool check metrics` lints an exposition the way Prometheus' docs ask."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import free_port, wait_for


class PrometheusUnavailable(RuntimeError):
    pass


def binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        raise PrometheusUnavailable("prometheus/promtool not installed (apt-get install prometheus; .ci/run does)")
    return prometheus, promtool


def promtool_check_metrics(exposition: str) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics` on an exposition (it reads stdin): exit 0 and no output when it is clean."""
    _, promtool = binaries()
    return subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60, check=False
    )


@dataclass
class ScrapeJob:
    name: str
    target: str  # host:port
    token_file: Path | None = None  # sent as `Authorization: Bearer <contents>`


@dataclass
class PrometheusServer:
    directory: Path
    jobs: list[ScrapeJob]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        scrape_configs = []
        for job in self.jobs:
            entry: dict[str, Any] = {"job_name": job.name, "static_configs": [{"targets": [job.target]}]}
            if job.token_file is not None:
                entry["authorization"] = {"type": "Bearer", "credentials_file": str(job.token_file)}
            scrape_configs.append(entry)
        return {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": scrape_configs}

    def start(self) -> PrometheusServer:
        prometheus, _ = binaries()
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        argv = [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with (self.directory / "prometheus.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=60, what=f"prometheus on {self.port}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.output()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> dict[str, Any]:
        """The HTTP API's answer to an instant query: {"status": "success", "data": {"result": [...]}} or an error."""
        answer: dict[str, Any] = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        return answer

    def value(self, promql: str) -> float | None:
        """The single value an instant query answers, or None while it answers nothing."""
        result = self.query(promql)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def output(self) -> str:
        log = self.directory / "prometheus.log"
        return log.read_text(errors="replace") if log.exists() else ""
