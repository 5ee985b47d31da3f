"""The build queue's rules on a real SQLite database with an injected clock: claims, leases that lapse, reports
re-judged against the model's tolerances, signed manifests, what a build waits for, and restart recovery."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from control_plane.adapters.artifacts import ArtifactStore
from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.signing_key import load_or_create_signer
from control_plane.domain.errors import InvalidInput
from control_plane.domain.registry import BuilderRecord, BuildStatus
from control_plane.services.build_queue import BuildQueueService, LeaseLost, QueueSettings
from control_plane.services.builds import BuildRequestSpec, BuildService
from control_plane.services.registry import RegistryService
from edge_agent.protocol import Verifier, canonical_json
from model_builds.capabilities import BuilderInfo
from model_builds.catalog import load_catalog
from model_builds.kinds import ArtifactKind
from tests.unit.control_plane.onnx_models import linear_model, linear_samples

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ONNX_BUILDER = BuilderInfo("b1", "host-1", (ArtifactKind.ONNX, ArtifactKind.ONNX_FP16, ArtifactKind.ONNX_INT8_QDQ))
ORIN_BUILDER = BuilderInfo(
    "orin-1", "orin", (ArtifactKind.ONNX, ArtifactKind.TENSORRT_PLAN), "jetson-orin", "8.7", "10.3.0"
)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Env:
    clock: Clock
    queue: BuildQueueService
    builds: BuildService
    registry: RegistryService
    store: BuildRepository
    public_key: str

    def request(self, model: str = "m", **kw: Any) -> list[Any]:
        spec = BuildRequestSpec(**({"targets": ["cpu-x86_64"]} | kw))
        return [v.build for v in self.builds.request(model, 1, spec).builds]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    clock = Clock()
    artifacts = ArtifactStore(tmp_path / "artifacts")
    signer = load_or_create_signer(tmp_path / "key.pem")
    registry_repo = RegistryRepository(engine)
    store = BuildRepository(engine)
    registry = RegistryService(registry_repo, artifacts, clock, 1 << 30)
    queue = BuildQueueService(
        store, registry_repo, artifacts, signer, clock, QueueSettings("http://cp", lease_s=30, builder_window_s=60)
    )
    builds = BuildService(store, registry_repo, artifacts, load_catalog(), queue, clock)
    metadata = json.dumps({"tolerances": {"int8": {"atol": 5.0, "rtol": 0.0, "cosine": 0.5}}})
    registry.register_upload("m", io.BytesIO(linear_model()), io.BytesIO(linear_samples()), metadata)
    return Env(clock, queue, builds, registry, store, signer.public_key_b64)


def figures(max_abs: float, cosine: float = 1.0, passed: bool = True) -> dict[str, Any]:
    output = {"name": "Y", "max_abs": max_abs, "max_rel": max_abs, "reference_scale": 1.0, "cosine": cosine}
    return {
        "parity": {"passed": passed, "reasons": [], "outputs": [output | {"top1_agreement": None}]},
        "latency": {"provider": "CPUExecutionProvider", "batches": [{"batch": 1, "runs": 5, "p50_ms": 1, "p99_ms": 2}]},
        "toolchain": {"onnxruntime": "1.x"},
        "hardware": {},
        "build_options": {},
    }


def test_claims_take_the_oldest_buildable_build_once(env: Env) -> None:
    (first,) = env.request()
    env.clock.advance(1)
    (second,) = env.request(kinds=["onnx-int8-qdq"])
    nothing = BuilderInfo("b0", "h", ())
    assert env.queue.claim(nothing) is None
    task = env.queue.claim(ONNX_BUILDER)
    assert task is not None and (task["build_id"], task["kind"]) == (first.id, "onnx")
    assert task["source"]["url"].startswith("http://cp/v1/artifacts/") and task["lease_s"] == 30
    other = env.queue.claim(replace(ONNX_BUILDER, builder_id="b2"))
    assert other is not None and other["build_id"] == second.id
    assert other["tolerances"] == {"atol": 5.0, "rtol": 0.0, "cosine": 0.5, "top1": 0.9}  # the model's override
    assert env.queue.claim(ONNX_BUILDER) is None
    running = env.builds.get_build(first.id)
    assert (running.status, running.build.builder_id) == (BuildStatus.RUNNING, "b1")


def test_a_lapsed_lease_requeues_and_the_old_builder_is_refused(env: Env) -> None:
    (build,) = env.request()
    assert env.queue.claim(ONNX_BUILDER) is not None
    env.clock.advance(20)
    env.queue.heartbeat(build.id, "b1", "optimising", 0.5)  # renewed: now expires at +50s
    with pytest.raises(LeaseLost):
        env.queue.heartbeat(build.id, "intruder", None, None)
    env.clock.advance(29)
    assert env.builds.get_build(build.id).status is BuildStatus.RUNNING
    env.clock.advance(2)
    assert env.builds.get_build(build.id).status is BuildStatus.QUEUED
    with pytest.raises(LeaseLost):
        env.queue.heartbeat(build.id, "b1", None, None)
    with pytest.raises(LeaseLost):
        env.queue.complete(build.id, "b1", io.BytesIO(b"x"), figures(0.0))
    again = env.queue.claim(replace(ONNX_BUILDER, builder_id="b2"))
    assert again is not None and again["build_id"] == build.id
    log = env.builds.logs(build.id)
    assert "optimising" in log and "lease of builder b1 lapsed" in log


@pytest.mark.parametrize(
    ("report", "status", "reason"),
    [
        pytest.param(figures(0.0), BuildStatus.SUCCEEDED, None, id="within"),
        pytest.param(figures(0.5, passed=True), BuildStatus.REJECTED, "max abs error", id="claims-passed-but-is-not"),
        pytest.param(figures(0.0, cosine=0.9), BuildStatus.REJECTED, "cosine", id="cosine"),
    ],
)
def test_complete_rejudges_parity_and_signs_the_manifest(
    env: Env, report: dict[str, Any], status: BuildStatus, reason: str | None
) -> None:
    (build,) = env.request()
    assert env.queue.claim(ONNX_BUILDER) is not None
    done = env.queue.complete(build.id, "b1", io.BytesIO(b"artifact bytes"), report)
    assert done.status is status
    if reason is not None:
        assert done.error is not None and reason in done.error
    manifest = done.manifest
    assert (manifest["build_id"], manifest["key"], manifest["kind"]) == (build.id, build.key, "onnx")
    assert manifest["artifact"]["size"] == len(b"artifact bytes") and manifest["builder"]["id"] == "b1"
    assert done.manifest_signature is not None
    Verifier(env.public_key).verify(canonical_json(manifest).encode(), done.manifest_signature)


@pytest.mark.parametrize(
    "report",
    [
        pytest.param({"parity": {"outputs": "garbage"}}, id="outputs-not-a-list"),
        pytest.param({"parity": {"outputs": ["x"]}}, id="output-not-an-object"),
        pytest.param({}, id="no-parity"),
    ],
)
def test_a_malformed_report_is_refused_and_the_build_stays_held(env: Env, report: dict[str, Any]) -> None:
    (build,) = env.request()
    assert env.queue.claim(ONNX_BUILDER) is not None
    with pytest.raises(InvalidInput, match=r"parity\.outputs"):
        env.queue.complete(build.id, "b1", io.BytesIO(b"x"), report)
    assert env.builds.get_build(build.id).status is BuildStatus.RUNNING


def test_the_models_tolerance_override_decides(env: Env) -> None:
    (build,) = env.request(kinds=["onnx-int8-qdq"])
    assert env.queue.claim(ONNX_BUILDER) is not None
    done = env.queue.complete(build.id, "b1", io.BytesIO(b"q"), figures(3.0, cosine=0.6))
    assert done.status is BuildStatus.SUCCEEDED  # int8 default atol 0.25 would reject; the model allows 5.0


def test_a_plan_reported_from_other_hardware_fails(env: Env) -> None:
    builds = env.request(targets=["jetson-orin"], kinds=["tensorrt-plan"])
    plan = next(b for b in builds if b.tensorrt_version == "10.3.0")
    task = env.queue.claim(ORIN_BUILDER)
    assert task is not None and task["build_id"] == plan.id
    report = figures(0.0) | {"hardware": {"compute_capability": "8.6", "tensorrt_version": "10.3.0"}}
    done = env.queue.complete(plan.id, "orin-1", io.BytesIO(b"plan"), report)
    assert done.status is BuildStatus.FAILED and "compute_capability 8.6" in (done.error or "")


def test_what_a_build_waits_for(env: Env) -> None:
    builds = env.request(targets=["jetson-orin"], kinds=["onnx", "tensorrt-plan"])
    views = {(v.build.artifact_kind, v.build.tensorrt_version): v for v in env.builds.list_builds("m", 1)}
    assert {v.status for v in views.values()} == {BuildStatus.WAITING_FOR_BUILDER}
    assert views[("tensorrt-plan", "10.3.0")].waiting_for == "a builder with TensorRT 10.3.0 on compute capability 8.7"
    assert views[("onnx", None)].waiting_for == "a builder that builds onnx"
    env.store.see_builder(BuilderRecord("b1", "h", ONNX_BUILDER.as_dict(), env.clock()))
    views = {(v.build.artifact_kind, v.build.tensorrt_version): v for v in env.builds.list_builds("m", 1)}
    assert views[("onnx", None)].status is BuildStatus.QUEUED
    assert views[("tensorrt-plan", "10.3.0")].status is BuildStatus.WAITING_FOR_BUILDER
    env.clock.advance(61)  # the builder has not been heard from within the window
    assert env.builds.get_build(builds[0].id).status is BuildStatus.WAITING_FOR_BUILDER


def test_same_key_same_build_and_a_failed_one_is_queued_again(env: Env) -> None:
    (build,) = env.request()
    (again,) = env.request()
    assert again.id == build.id
    assert env.queue.claim(ONNX_BUILDER) is not None
    failed = env.queue.fail(build.id, "b1", "toolchain exploded")
    assert (failed.status, failed.error) == (BuildStatus.FAILED, "toolchain exploded")
    (retried,) = env.request()
    assert (retried.id, retried.status, retried.error) == (build.id, BuildStatus.QUEUED, None)


def test_recover_requeues_only_the_in_process_builders_builds(env: Env) -> None:
    (mine,) = env.request()
    env.clock.advance(1)
    (theirs,) = env.request(kinds=["onnx-int8-qdq"])
    assert env.queue.claim(replace(ONNX_BUILDER, builder_id="control-plane@h/0")) is not None
    assert env.queue.claim(replace(ONNX_BUILDER, builder_id="remote")) is not None
    assert env.queue.recover({"control-plane@h/0"}) == 1
    assert env.builds.get_build(mine.id).build.status is BuildStatus.QUEUED
    assert env.builds.get_build(theirs.id).build.status is BuildStatus.RUNNING
