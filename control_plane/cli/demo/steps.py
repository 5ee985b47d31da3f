"""The demo's steps, in order, each a small function over a `DemoRun`, talking REST like an operator would.

Every wait has a deadline and checks that the children are still alive, so a crashed process fails the step
at once with its log instead of a timeout. Steps never signal processes: `Supervisor.stop_all` does that.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from control_plane.cli import views
from control_plane.cli.client import ApiClient, CliError, ServerUnreachable
from control_plane.cli.commands.training import job_progress
from control_plane.cli.demo import fleet
from control_plane.cli.demo.inference import DeviceCheck, Samples, check_device, infer_request, load_samples
from control_plane.cli.demo.keep import KeptStack
from control_plane.cli.demo.processes import ChildDied, Supervisor
from control_plane.cli.demo.progress import DemoStep, Reporter
from control_plane.cli.parsing import load_training_spec
from control_plane.cli.waiting import poll_until

T = TypeVar("T")

DEADLINES_S = {
    DemoStep.BROKER: 20.0,
    DemoStep.CONTROL_PLANE: 60.0,
    DemoStep.DEVICES_ONLINE: 60.0,
    DemoStep.TRAIN: 300.0,
    DemoStep.BUILD: 180.0,
    DemoStep.ROLLOUT: 180.0,
}


class DemoFailure(CliError):
    """A step failed; `logs` names the processes whose log tails explain it."""

    def __init__(self, step: DemoStep, message: str, logs: tuple[str, ...] = ()) -> None:
        super().__init__(f"step '{step.value}' failed: {message}")
        self.step = step
        self.logs = logs


@dataclass
class DemoRun:
    workdir: Path
    supervisor: Supervisor
    reporter: Reporter
    ports: fleet.Ports
    spec_file: Path
    code_dir: Path  # the training code root the control plane is given; the spec's entrypoint is relative to it
    api: ApiClient = field(init=False)
    public_key: str = ""
    model: str = ""
    version: int = 0
    rollout: dict[str, Any] = field(default_factory=dict)
    devices: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, DeviceCheck] = field(default_factory=dict)
    token_file: Path | None = None
    infer_body: dict[str, Any] | None = None  # one reference input, as a KServe v2 request

    def __post_init__(self) -> None:
        self.api = ApiClient(f"http://{fleet.LOOPBACK}:{self.ports.api}", timeout=15.0)

    def kept_stack(self) -> KeptStack:
        """What `--keep` prints the next commands for: this run's URLs, token file and one device's endpoint."""
        urls = sorted(str((d.get("reported") or {}).get("serving_url") or "") for d in self.devices)
        return KeptStack(
            workdir=self.workdir,
            api_url=self.api.base_url,
            token_file=self.token_file or self.workdir / "admin-token",
            model=self.model,
            version=self.version,
            serving_url=next((u for u in urls if u), None),
            infer_body=self.infer_body,
            edgectl=_edgectl_command(),
        )

    def wait(
        self, fetch: Callable[[], T], done: Callable[[T], bool], what: str, describe: Callable[[T], str] | None = None
    ) -> T:
        """poll_until with this step's deadline, failing fast when a child process dies."""

        def guarded() -> T:
            self.supervisor.check_alive()
            return fetch()

        try:
            return poll_until(
                guarded,
                done,
                timeout=DEADLINES_S[self.reporter.step],
                what=what,
                interval=0.25,
                on_update=(lambda v: self.reporter.update(describe(v))) if describe else None,
                describe=describe,
            )
        except ChildDied as exc:
            raise DemoFailure(self.reporter.step, str(exc), (exc.child.name,)) from exc
        except CliError as exc:
            if isinstance(exc, DemoFailure):
                raise
            raise DemoFailure(self.reporter.step, str(exc), ("control-plane",)) from exc


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _edge_agent_command() -> list[str]:
    beside = Path(sys.executable).parent / "edge-agent"
    found = str(beside) if beside.exists() else shutil.which("edge-agent")
    if found is None:
        raise CliError("cannot find the `edge-agent` command (install the project: pip install -e .)")
    return [found]


def start_broker(run: DemoRun) -> None:
    run.reporter.begin(DemoStep.BROKER, "starting the embedded MQTT broker")
    port = run.ports.broker
    run.supervisor.start(
        "broker",
        _python_module("control_plane.adapters.embedded_broker", "--host", fleet.LOOPBACK, "--port", str(port)),
    )
    run.wait(lambda: fleet.port_open(port), bool, f"the broker to listen on port {port}")
    run.reporter.done(
        f"MQTT broker listening on {fleet.LOOPBACK}:{port} (embedded, loopback only: anonymous and without per-device "
        "topic rules or TLS; production uses Mosquitto with mqtt.admin: dynsec, docs/security.md)"
    )


def _health_or_none(api: ApiClient) -> dict[str, Any] | None:
    try:
        health: dict[str, Any] = api.health()
        return health
    except ServerUnreachable:
        return None


def start_control_plane(run: DemoRun) -> None:
    run.reporter.begin(DemoStep.CONTROL_PLANE, "starting the control plane")
    settings = fleet.control_plane_config(run.workdir, run.ports, run.code_dir)
    config = fleet.write_yaml(run.workdir / "control-plane.yaml", settings)
    run.supervisor.start("control-plane", _python_module("control_plane.cli.main", "server", "--config", str(config)))
    run.wait(
        lambda: _health_or_none(run.api),
        lambda h: bool(h and h.get("mqtt_connected")),
        "the control plane to answer /healthz connected to MQTT",
        describe=lambda h: "starting the control plane" if h is None else f"control plane up, mqtt {h}",
    )
    run.public_key = str(run.api.signing_key()["public_key"])
    token_file = Path(settings["data_dir"]) / "admin-token"  # the control plane's first start wrote it
    run.token_file = token_file
    run.api.close()
    run.api = ApiClient(run.api.base_url, timeout=15.0, token=token_file.read_text().strip())
    run.reporter.done(
        f"control plane on {run.api.base_url} (signing key pinned for the agents; admin token in {token_file})"
    )


def start_agents(run: DemoRun) -> None:
    """Each device enrolls as a production device does: an auto-approving enrollment token per site presets its
    labels; `edge-agent enroll` makes its key pair and writes the identity it receives into its agent.yaml."""
    run.reporter.begin(DemoStep.AGENTS, f"enrolling {len(fleet.DEMO_DEVICES)} edge agents")
    command = _edge_agent_command()
    configs: dict[str, Path] = {}
    for body, devices in fleet.enrollment_tokens(fleet.DEMO_DEVICES):
        token = str(run.api.create_enrollment_token(body)["token"])
        for device in devices:
            run.reporter.update(f"enrolling {device.device_id} with enrollment token {body['name']}")
            config = fleet.agent_config(run.workdir, device, run.ports)
            path = fleet.write_yaml(run.workdir / f"agent-{device.device_id}.yaml", config)
            _enroll(run, command, device.device_id, path, token)
            configs[device.device_id] = path
    for device_id, path in configs.items():
        run.supervisor.start(device_id, [*command, "run", "--config", str(path)])
    run.reporter.done("edge agents enrolled and started: " + ", ".join(_device_line(d) for d in fleet.DEMO_DEVICES))


def _enroll(run: DemoRun, command: list[str], device_id: str, config: Path, token: str) -> None:
    log = run.workdir / "logs" / f"enroll-{device_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [*command, "enroll", "--url", run.api.base_url, "--device-id", device_id, "--config", str(config)]
    env = run.supervisor.env | {"EDGE_AGENT_ENROLL_TOKEN": token}  # never on a command line
    with log.open("wb") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=120, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise DemoFailure(DemoStep.AGENTS, f"edge-agent enroll of {device_id} exited {done.returncode}:\n{tail}")


def _device_line(device: fleet.DemoDevice) -> str:
    return f"{device.device_id} ({','.join(f'{k}={v}' for k, v in device.labels.items())})"


def _online(devices: list[dict[str, Any]]) -> list[str]:
    return sorted(
        d["id"] for d in devices if d.get("presence") == "online" and (d.get("reported") or {}).get("serving_url")
    )


def wait_devices_online(run: DemoRun) -> None:
    want = len(fleet.DEMO_DEVICES)
    run.reporter.begin(DemoStep.DEVICES_ONLINE, f"waiting for {want} agents")
    devices = run.wait(
        run.api.devices,
        lambda ds: len(_online(ds)) >= want,
        f"{want} devices online with a serving URL",
        describe=lambda ds: f"waiting for {want} agents: {len(_online(ds))}/{want} online",
    )
    run.devices = devices
    classes = sorted({str(d.get("gpu_class")) for d in devices})
    run.reporter.done(f"{want} devices online (GPU classes: {', '.join(classes)})")


def train(run: DemoRun) -> None:
    run.reporter.begin(DemoStep.TRAIN, "training: submitting the job")
    job = run.api.create_training_job(load_training_spec(run.spec_file))
    job_id = str(job["id"])
    final = run.wait(
        lambda: run.api.training_job(job_id),
        lambda j: j.get("status") in ("succeeded", "failed"),
        f"training job {job_id}",
        describe=lambda j: f"training ({job_progress(j)})",
    )
    if final.get("status") != "succeeded":
        tail = str(final.get("logs_tail") or "").strip()
        raise DemoFailure(DemoStep.TRAIN, f"job {job_id}: {final.get('error')}\n--- job log (tail) ---\n{tail}")
    run.model, run.version = str(final["model"]), int(final["version"])
    version = run.api.version(run.model, run.version)
    lineage = version.get("lineage") or {}
    metrics = version.get("metrics") or {}
    digest = lineage.get("data_digest") or metrics.get("data_digest")
    run.reporter.done(
        f"trained {run.model} v{run.version}: accuracy {_number(metrics.get('accuracy'))}, "
        f"data {str(digest)[:12]}, code {str(lineage.get('code_revision'))[:12]}, "
        f"job {lineage.get('training_job_id')}"
    )


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def build(run: DemoRun) -> None:
    """Queue a portable fp32 ONNX build per GPU class in the fleet; the control plane's in-process builder takes
    them (builds are asynchronous), and each must finish `succeeded` with its parity proved."""
    targets = sorted({str(d["gpu_class"]) for d in run.devices})
    run.reporter.begin(DemoStep.BUILD, f"queueing builds for {', '.join(targets)}")
    created = run.api.create_builds(run.model, run.version, targets)
    ids = [str(b["id"]) for b in created.get("builds") or []]
    finals = run.wait(
        lambda: [run.api.build(b) for b in ids],
        lambda bs: all(b.get("status") in views.FINISHED_BUILD for b in bs),
        f"builds {', '.join(ids)}",
        describe=lambda bs: "; ".join(views.build_line(b) for b in bs),
    )
    failed = [views.build_line(b) for b in finals if b.get("status") != "succeeded"]
    if failed or not finals:
        raise DemoFailure(DemoStep.BUILD, "; ".join(failed) or "no build was queued", ("control-plane",))
    run.reporter.done(
        "built and proved "
        + ", ".join(
            f"{b['target']} ({b.get('artifact_size')} bytes, {views.parity_summary(b.get('parity'))})" for b in finals
        )
    )


def _rollout_text(rollout: dict[str, Any]) -> str:
    counts = rollout.get("counts") or {}
    total = len(rollout.get("devices") or [])
    return f"rolling out: {counts.get('activated', 0)}/{total} activated, {counts.get('failed', 0)} failed"


def rollout(run: DemoRun) -> None:
    run.reporter.begin(DemoStep.ROLLOUT, "rolling out")
    body = {
        "model": run.model,
        "version": run.version,
        "selector": {"labels": {}, "gpu_class": None},
        "strategy": "all-at-once",
    }
    created = run.api.create_rollout(body)
    rollout_id = str(created["id"])
    final = run.wait(
        lambda: run.api.rollout(rollout_id),
        lambda r: r.get("phase") in ("succeeded", "aborted", "rolled_back", "paused"),
        f"rollout {rollout_id}",
        describe=_rollout_text,
    )
    run.rollout = final
    bad = [d for d in final.get("devices") or [] if d.get("status") != "activated"]
    if final.get("phase") != "succeeded" or bad:
        reasons = "; ".join(f"{d['device_id']}: {d.get('status')} {d.get('reason') or ''}" for d in bad)
        names = tuple(str(d["device_id"]) for d in bad) or ("control-plane",)
        raise DemoFailure(DemoStep.ROLLOUT, f"rollout {rollout_id} {final.get('phase')}: {reasons}", names)
    run.reporter.done(f"rollout {rollout_id}: {len(final.get('devices') or [])} devices activated")


def verify(run: DemoRun) -> None:
    run.reporter.begin(DemoStep.VERIFY, "fetching the reference samples")
    samples = load_samples(run.api.samples(run.model, run.version))
    if not samples.outputs:
        raise DemoFailure(DemoStep.VERIFY, "the version's samples.npz holds no reference outputs")
    run.infer_body = infer_request({name: array[:1] for name, array in samples.inputs.items()})
    run.devices = run.api.devices()
    for device in sorted(run.devices, key=lambda d: str(d["id"])):
        run.reporter.update(f"asking {device['id']} for answers and measuring latency")
        run.checks[str(device["id"])] = _check(run, device, samples)
    wrong = {k: c.problem for k, c in run.checks.items() if not c.answers_ok}
    if wrong:
        raise DemoFailure(DemoStep.VERIFY, "; ".join(f"{k}: {v}" for k, v in wrong.items()), tuple(wrong))
    run.reporter.done(f"{len(run.checks)} devices answer like the reference")


def _check(run: DemoRun, device: dict[str, Any], samples: Samples) -> DeviceCheck:
    url = (device.get("reported") or {}).get("serving_url")
    if not url:
        return DeviceCheck(False, float("nan"), "reports no serving URL")
    try:
        return check_device(str(url), run.model, samples)
    except Exception as exc:  # any transport or decoding error is this device's failure, reported as such
        return DeviceCheck(False, float("nan"), f"{type(exc).__name__}: {exc}")


def _edgectl_command() -> str:
    """`edgectl` when this shell finds the one running now; else its path (the virtualenv is not active)."""
    beside = Path(sys.executable).parent / "edgectl"
    found = shutil.which("edgectl")
    if not beside.exists() or (found is not None and Path(found).resolve() == beside.resolve()):
        return "edgectl"
    return str(beside)


STEPS: tuple[Callable[[DemoRun], None], ...] = (
    start_broker,
    start_control_plane,
    start_agents,
    wait_devices_online,
    train,
    build,
    rollout,
    verify,
)
