"""One executor decision over a whole fleet, in-process: what a rollout's create and an operator's abort cost the
control plane before the first desired state leaves (decision 0012: chosen, composed, signed and stored first).

N devices enrolled on SQLite (a temporary file), each already reporting a model; the real repositories, catalog and
signer; a publisher that only counts. It times, in CPU seconds of the deciding thread (not wall time: the machines
here are shared), `RolloutService.create` of an all-at-once rollout (a long bake keeps it open) and then
`command(abort)`, and within each decision the parts: reading the devices to publish to (`get_devices`), composing
and signing (`Composer.compose`) and storing (`RolloutRepository.save`). Baseline, measured in the same run: signing
N desired states alone (`Signer.sign_desired`, the part no change to the engine can remove). Medians over `--runs`.

    .venv/bin/python benchmarks/rollout_decision.py [--devices 5000] [--runs 3]

Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.db.rollout_repository import RolloutRepository
from control_plane.domain.registry import Build, BuildStatus, NewVersion
from control_plane.domain.rollout_progress import Operator
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.services import rollout_compose
from control_plane.services.rollouts import RolloutService
from edge_agent.protocol import DesiredState, HardwareFacts, ModelHealth, ModelStatus, ReportedState, Signer, Topics
from edge_agent.protocol.vocabulary import ArtifactKind, Channel, Precision
from model_builds.catalog import load_catalog

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
HARDWARE = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")


def build(number: int) -> Build:
    return Build(
        id=f"b{number}", model="m", version=number, target="cpu-x86_64", precision=Precision.FP32,
        artifact_kind=ArtifactKind.ONNX, status=BuildStatus.SUCCEEDED, artifact_sha256=f"{number}" * 64,
        artifact_size=1000, error=None, created_at=T0, manifest={}, manifest_signature=None, key=f"k{number}",
        compute_capability=None, tensorrt_version=None,
    )  # fmt: skip


class SamplesFile:
    """The artifact store as composing uses it: where a version's self-test samples are (for their size)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def path_for(self, sha256: str) -> Path | None:
        return self._path


class Counted:
    def __init__(self) -> None:
        self.published = 0

    def publish(self, topic: str, payload: bytes, retain: bool = True, qos: int = 1) -> bool:
        self.published += 1
        return True


@dataclass
class Parts:
    """CPU seconds of the deciding thread spent in each timed part."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timing(self, cls: Any, name: str, label: str) -> Iterator[None]:
        original = getattr(cls, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.thread_time() - start

        setattr(cls, name, timed)
        try:
            yield
        finally:
            setattr(cls, name, original)


def reporting(device_id: str) -> ReportedState:
    v1 = ModelStatus(name="m", version=1, build_id="b1", active_slot="a", provider="cpu", health=ModelHealth.SERVING)
    return ReportedState(device_id=device_id, agent_version="x", applied_generation=1, models=[v1], hardware=HARDWARE)


def one_run(devices: int) -> dict[str, float]:
    """The CPU seconds of create and abort for `devices` devices, with their parts."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'cp.db'}")
        migrate(engine)
        registry, builds, fleet = RegistryRepository(engine), BuildRepository(engine), FleetRepository(engine)
        for number in (1, 2):
            registry.add_version(NewVersion("m", T0, "a" * 64, 1, (), (), "b" * 64, 1, False, False))
            builds.insert_build(build(number))
        for i in range(devices):
            device_id = f"d{i:05}"
            fleet.enroll(device_id, Channel.MQTT, {"fleet": "bench"}, "cpu-x86_64", HARDWARE, None, T0)
            fleet.apply_report(reporting(device_id), T0)
        samples = Path(tmp) / "samples.npz"
        samples.write_bytes(b"x" * 1000)
        publisher = Counted()
        service = RolloutService(
            fleet, RolloutRepository(engine), registry, builds, SamplesFile(samples),  # type: ignore[arg-type]
            load_catalog(), Signer.generate(), publisher, Topics(), lambda: T0, "http://cp",
        )  # fmt: skip
        out: dict[str, float] = {}
        request = RolloutRequest.model_validate({"model": "m", "version": 2, "bake_s": 3600})
        rollout_id = timed_decision(out, "create", lambda: service.create(request).id)
        timed_decision(out, "abort", lambda: service.command(rollout_id, Operator.ABORT).id)
        assert publisher.published == 2 * devices, f"published {publisher.published} of {2 * devices}"
        return out


def timed_decision(out: dict[str, float], name: str, decide: Callable[[], str]) -> str:
    """Run one decision, adding its CPU seconds and its parts' to `out`; the rollout's id."""
    parts = Parts()
    with (
        parts.timing(FleetRepository, "get_devices", "read devices"),
        parts.timing(rollout_compose.Composer, "compose", "compose + sign"),
        parts.timing(RolloutRepository, "save", "store"),
    ):
        start = time.thread_time()
        rollout_id = decide()
        out[name] = time.thread_time() - start
    out |= {f"{name}: {label}": seconds for label, seconds in parts.seconds.items()}
    return rollout_id


def signing_alone(devices: int) -> float:
    """CPU seconds to sign `devices` desired states of one model each (the baseline)."""
    signer = Signer.generate()
    document = DesiredState.model_validate(
        {"device_id": "d00000", "generation": 2, "issued_at": T0.isoformat(), "models": []}
    )
    start = time.thread_time()
    for i in range(devices):
        signer.sign_desired(document.model_copy(update={"device_id": f"d{i:05}"}))
    return time.thread_time() - start


def median_of(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in runs)


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    runs = [one_run(args.devices) for _ in range(args.runs)]
    baseline = statistics.median(signing_alone(args.devices) for _ in range(args.runs))
    n = args.devices
    out(f"{n} devices, medians of {args.runs} runs, CPU seconds of the deciding thread")
    out(f"baseline: signing {n} desired states alone: {baseline:.2f} s ({baseline / n * 1000:.3f} ms/device)")
    out("| decision | part | CPU s | ms/device | x signing alone |")
    out("|---|---|---|---|---|")
    for name in ("create", "abort"):
        total = median_of(runs, name)
        out(f"| {name} | whole decision | {total:.2f} | {total / n * 1000:.3f} | {total / baseline:.1f}x |")
        for label in ("read devices", "compose + sign", "store"):
            part = median_of(runs, f"{name}: {label}")
            out(f"| {name} | {label} | {part:.2f} | {part / n * 1000:.3f} | {part / baseline:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
