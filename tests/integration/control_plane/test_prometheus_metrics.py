"""Prometheus scrapes the real thing: a real `edgectl server` (with a `metrics` token made by `edgectl tokens
create`) and a real `edge-agent run` serving a model, scraped by a real Prometheus server (Debian's package, our own
process). PromQL answers what happened; `promtool check metrics` passes on both expositions; every query of the
shipped Grafana dashboard is valid PromQL. Skipped with the reason where Prometheus is not installed; in CI (where
.ci/run installs it) a missing binary fails instead."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edge_agent.protocol import Signer
from tests.integration.agent.harness import AgentProcess, ArtifactServer, ControlPlaneClient
from tests.integration.agent.test_agent_process import agent_config, applied, infer
from tests.prometheus import PrometheusServer, PrometheusUnavailable, ScrapeJob, binaries, promtool_check_metrics
from tests.support import EDGECTL, ControlPlaneProcess, Mosquitto, enroll_device, free_port, python_env, wait_for
from tests.unit.agent.builders import build_version, signed

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "fleet-overview.json"
INFERENCES = 3


@dataclass
class Stack:
    server: ControlPlaneProcess
    token: str
    agent_port: int
    prometheus: PrometheusServer


@pytest.fixture(scope="module")
def prometheus_binaries() -> None:
    try:
        binaries()
    except PrometheusUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Prometheus must run in CI: {exc}")
        pytest.skip(str(exc))


def create_metrics_token(server: ControlPlaneProcess) -> str:
    """What an operator types to give Prometheus its credential."""
    argv = [EDGECTL, "--url", server.url, "tokens", "create", "prometheus", "--role", "metrics", "-o", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    created = json.loads(done.stdout)
    assert created["role"] == "metrics"
    return str(created["token"])


@pytest.fixture(scope="module")
def stack(prometheus_binaries: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("prometheus-metrics")
    mosquitto = Mosquitto(workdir=base / "broker")  # its own: no retained state of other tests
    mosquitto.start()
    server = ControlPlaneProcess(mosquitto, base / "cp-data")
    agent, prometheus, control = None, None, None
    try:
        server.start()
        with server.client() as api:
            for device in ("rack-1", "rack-2"):
                enroll_device(api, device, gpu_class="cpu-x86_64")
        token = create_metrics_token(server)
        (base / "scrape-token").write_text(token)
        signer, device, port = Signer.generate(), "dev-1", free_port()
        control = ControlPlaneClient(mosquitto, device)
        agent = AgentProcess(agent_config(base, signer, device, mosquitto.port, port), base / "agent.log").start()
        with ArtifactServer(base / "art") as artifacts:
            control.publish_desired(signed(signer, 1, [build_version(base / "art", 1, base_url=artifacts.url)], device))
            wait_for(lambda: applied(control, 1), timeout=60, what=f"the agent serving v1\n{agent.output()}")
        for _ in range(INFERENCES):
            assert infer(port)[0] == "1"
        jobs = [
            ScrapeJob("edge-control-plane", f"127.0.0.1:{server.port}", base / "scrape-token"),
            ScrapeJob("edge-agent", f"127.0.0.1:{port}"),
        ]
        prometheus = PrometheusServer(base / "prometheus", jobs).start()
        yield Stack(server, token, port, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if agent is not None:
            agent.terminate()
        if control is not None:
            control.close()
        server.stop()
        mosquitto.stop()


def test_the_control_plane_serves_metrics_only_to_a_token_that_may_scrape(stack: Stack) -> None:
    url = f"{stack.server.url}/metrics"
    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 401 and "edge_control_plane" not in anonymous.text
    scraper = {"Authorization": f"Bearer {stack.token}"}
    # The scrape token reads aggregate figures and nothing else: no device, no artifact, no token list.
    for path in ("/v1/devices", "/v1/models", "/v1/tokens"):
        assert httpx.get(f"{stack.server.url}{path}", headers=scraper, timeout=10).status_code == 403, path
    scraped = httpx.get(url, headers=scraper, timeout=10)
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert 'edge_control_plane_devices{gpu_class="cpu-x86_64",presence="unknown"} 2.0' in scraped.text
    assert "rack-1" not in scraped.text and "rack-2" not in scraped.text  # no device id labels
    linted = promtool_check_metrics(scraped.text)
    assert linted.returncode == 0 and linted.stdout == "", linted.stdout + linted.stderr


def test_the_agent_exposes_what_it_served_and_installed(stack: Stack) -> None:
    text = httpx.get(f"http://127.0.0.1:{stack.agent_port}/metrics", timeout=10).text
    assert f'edge_agent_inference_requests_total{{model="lin",version="1"}} {float(INFERENCES)}' in text
    assert 'edge_agent_model_loaded{model="lin",slot="active",version="1"} 1.0' in text
    assert 'edge_agent_model_swaps_total{model="lin"} 1.0' in text
    assert 'edge_agent_self_tests_total{model="lin",result="passed"} 1.0' in text
    assert "edge_agent_artifact_download_bytes_total 0.0" not in text  # the artifact came over HTTP
    linted = promtool_check_metrics(text)
    assert linted.returncode == 0 and linted.stdout == "", linted.stdout + linted.stderr


def test_prometheus_scrapes_both_and_promql_answers(stack: Stack) -> None:
    prometheus = stack.prometheus
    for job in ("edge-control-plane", "edge-agent"):
        wait_for(lambda job=job: prometheus.value(f'up{{job="{job}"}}') == 1, timeout=60, what=f"{job} scraped")
    assert prometheus.value("sum(edge_control_plane_devices)") == 2
    assert prometheus.value('sum(edge_agent_inference_requests_total{model="lin"})') == INFERENCES
    routes = prometheus.query('edge_control_plane_http_request_duration_seconds_count{route="/metrics"}')
    assert routes["data"]["result"], "the control plane timed Prometheus' own scrapes by route template"


def test_every_dashboard_query_is_valid_promql(stack: Stack) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            answer = stack.prometheus.query(target["expr"])
            assert answer["status"] == "success", f"{panel['title']}: {answer.get('error')}"
