"""The build queue's rules on a real SQLite database with an injected clock and the real onnxruntime sandbox:
claims and leases held by builder identities, artifacts re-proved by the control plane (a builder's figures never
decide an ONNX build), plans only from registered builders, signed manifests only for builds that pass, what a
build waits for, cancelling, and restart recovery."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator
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
from control_plane.domain.build_trust import BuilderRegistration
from control_plane.domain.errors import Conflict, Forbidden, InvalidInput
from control_plane.domain.identity import Principal, Role
from control_plane.domain.registry import BuilderRecord, BuildStatus
from control_plane.services.build_queue import BuildQueueService, LeaseLost, QueueSettings
from control_plane.services.builds import BuildRequestSpec, BuildService
from control_plane.services.local_builder import builtin_principal
from control_plane.services.registry import RegistryService
from control_plane.services.reproof import ReProver
from edge_agent.protocol import Verifier, canonical_json
from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.catalog import load_catalog
from model_builds.ort_sandbox import run_bounded
from model_builds.protocol import BuilderInfo, wire
from tests.unit.control_plane.onnx_models import linear_model, linear_samples

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ONNX_BUILDER = BuilderInfo("b1", "host-1", (ArtifactKind.ONNX, ArtifactKind.ONNX_FP16, ArtifactKind.ONNX_INT8_QDQ))
ORIN_BUILDER = BuilderInfo(
    "orin-1", "orin", (ArtifactKind.ONNX, ArtifactKind.TENSORRT_PLAN), "jetson-orin", "8.7", "10.3.0"
)
# Builder identities as the API hands them over (authenticated tokens); labels come from BuilderInfo.
B1 = Principal("token:b1", "builder one", Role.BUILDER)
B2 = Principal("token:b2", "builder two", Role.BUILDER)
ORIN = Principal("token:orin", "orin builder", Role.BUILDER)
ADMIN = Principal("token:admin", "admin", Role.ADMIN)
HONEST = linear_model()  # what the version's reference outputs came from: agrees exactly
TAMPERED = linear_model(weight_scale=1.5)  # same signature, other answers (max abs error 1.6 on the samples)


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
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    """Every test here runs on SQLite and on PostgreSQL (`database_url`: a new database per test)."""
    engine = make_engine(database_url)
    migrate(engine)
    clock = Clock()
    artifacts = ArtifactStore(tmp_path / "artifacts")
    signer = load_or_create_signer(tmp_path / "key.pem")
    registry_repo = RegistryRepository(engine)
    store = BuildRepository(engine)
    registry = RegistryService(registry_repo, artifacts, clock, 1 << 30)
    prover = ReProver(artifacts, functools.partial(run_bounded, timeout_s=60, memory_bytes=2 * 1024**3))
    queue = BuildQueueService(
        store,
        registry_repo,
        artifacts,
        signer,
        clock,
        QueueSettings("http://cp", lease_s=30, builder_window_s=60, reproof_timeout_s=60),
        prover,
    )
    builds = BuildService(store, registry_repo, artifacts, load_catalog(), queue, clock)
    metadata = json.dumps({"tolerances": {"int8": {"atol": 5.0, "rtol": 0.0, "cosine": 0.5}}})
    registry.register_upload("m", io.BytesIO(linear_model()), io.BytesIO(linear_samples()), metadata)
    yield Env(clock, queue, builds, registry, store, signer.public_key_b64)
    engine.dispose()


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
    assert env.queue.claim(B1, nothing) is None
    task = env.queue.claim(B1, ONNX_BUILDER)
    assert task is not None and (task.build_id, task.kind) == (first.id, "onnx")
    assert task.source.url.startswith("http://cp/v1/artifacts/") and task.lease_s == 30
    other = env.queue.claim(B2, replace(ONNX_BUILDER, builder_id="b2"))
    assert other is not None and other.build_id == second.id
    assert wire(other.tolerances) == {"atol": 5.0, "rtol": 0.0, "cosine": 0.5, "top1": 0.9}  # the model's override
    assert env.queue.claim(B1, ONNX_BUILDER) is None
    running = env.builds.get_build(first.id)
    assert (running.status, running.build.builder_id) == (BuildStatus.RUNNING, "b1")
    assert running.build.builder_subject == B1.subject


@pytest.mark.parametrize(
    "caller",
    [
        pytest.param(Principal("token:v", "viewer", Role.VIEWER), id="viewer"),
        pytest.param(Principal("token:o", "operator", Role.OPERATOR), id="operator"),
        pytest.param(ADMIN, id="admin"),
        pytest.param(Principal("token:d", "device", Role.DEVICE, device_id="dev-1"), id="device"),
    ],
)
def test_only_builder_identities_claim(env: Env, caller: Principal) -> None:
    (build,) = env.request()
    with pytest.raises(Forbidden, match="not a builder"):
        env.queue.claim(caller, ONNX_BUILDER)
    assert env.builds.get_build(build.id).build.status is BuildStatus.QUEUED


def test_a_lease_belongs_to_the_identity_that_claimed_it_not_to_the_label(env: Env) -> None:
    (build,) = env.request()
    assert env.queue.claim(B1, ONNX_BUILDER) is not None
    before = env.store.get_build(build.id)
    env.clock.advance(10)
    # B2 knows the public label "b1" and the build id; it still holds nothing.
    with pytest.raises(LeaseLost):
        env.queue.heartbeat(build.id, B2, "hijacked", 1.0)
    with pytest.raises(LeaseLost):
        env.queue.fail(build.id, B2, "sabotage")
    with pytest.raises(LeaseLost):
        env.queue.complete(build.id, B2, io.BytesIO(TAMPERED), figures(0.0))
    assert env.store.get_build(build.id) == before
    assert "hijacked" not in env.builds.logs(build.id)


def test_a_lapsed_lease_requeues_and_the_old_builder_is_refused(env: Env) -> None:
    (build,) = env.request()
    assert env.queue.claim(B1, ONNX_BUILDER) is not None
    env.clock.advance(20)
    env.queue.heartbeat(build.id, B1, "optimising", 0.5)  # renewed: now expires at +50s
    with pytest.raises(LeaseLost):
        env.queue.heartbeat(build.id, B2, None, None)
    env.clock.advance(29)
    assert env.builds.get_build(build.id).status is BuildStatus.RUNNING
    env.clock.advance(2)
    assert env.builds.get_build(build.id).status is BuildStatus.QUEUED
    with pytest.raises(LeaseLost):
        env.queue.heartbeat(build.id, B1, None, None)
    with pytest.raises(LeaseLost):
        env.queue.complete(build.id, B1, io.BytesIO(HONEST), figures(0.0))
    again = env.queue.claim(B2, replace(ONNX_BUILDER, builder_id="b2"))
    assert again is not None and again.build_id == build.id
    log = env.builds.logs(build.id)
    assert "optimising" in log and "lease of builder b1 lapsed" in log


@pytest.mark.parametrize(
    ("artifact", "report", "status", "reason"),
    [
        pytest.param(HONEST, figures(0.0), BuildStatus.SUCCEEDED, None, id="honest"),
        pytest.param(TAMPERED, figures(0.0), BuildStatus.REJECTED, "max abs error", id="tampered-claims-perfect"),
        pytest.param(
            HONEST,
            figures(0.5, cosine=0.9, passed=False),
            BuildStatus.SUCCEEDED,
            None,
            id="pessimistic-report-does-not-decide-either",
        ),
        pytest.param(
            b"not a model",
            figures(0.0),
            BuildStatus.REJECTED,
            "did not run on the control plane",
            id="garbage-claims-perfect",
        ),
    ],
)
def test_complete_reproves_the_artifact_and_signs_only_what_passes(
    env: Env, artifact: bytes, report: dict[str, Any], status: BuildStatus, reason: str | None
) -> None:
    (build,) = env.request()
    assert env.queue.claim(B1, ONNX_BUILDER) is not None
    done = env.queue.complete(build.id, B1, io.BytesIO(artifact), report)
    assert done.status is status
    assert done.parity is not None and done.parity["measured_by"] == "control-plane"
    assert done.reported_parity == report["parity"]  # recorded as the builder said it
    if reason is not None:
        assert done.error is not None and reason in done.error
        assert (done.manifest, done.manifest_signature) == ({}, None)  # nothing vouched for
        assert done.parity["passed"] is False
        return
    manifest = done.manifest
    assert (manifest["build_id"], manifest["key"], manifest["kind"]) == (build.id, build.key, "onnx")
    assert manifest["artifact"]["size"] == len(artifact) and manifest["builder"]["id"] == "b1"
    assert (manifest["builder"]["subject"], manifest["builder"]["name"]) == (B1.subject, B1.name)
    assert manifest["parity"] == done.parity and manifest["parity"]["outputs"][0]["max_abs"] == 0.0
    assert done.manifest_signature is not None
    Verifier(env.public_key).verify(canonical_json(manifest).encode(), done.manifest_signature)


def test_a_disagreeing_report_is_logged_and_disregarded(env: Env) -> None:
    (build,) = env.request()
    assert env.queue.claim(B1, ONNX_BUILDER) is not None
    done = env.queue.complete(build.id, B1, io.BytesIO(TAMPERED), figures(0.0))
    log = env.builds.logs(build.id)
    assert "builder report disregarded" in log and "the control plane measured it outside" in log
    assert done.parity is not None and done.parity["outputs"][0]["max_abs"] > 1.0


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
    assert env.queue.claim(B1, ONNX_BUILDER) is not None
    with pytest.raises(InvalidInput, match=r"parity\.outputs"):
        env.queue.complete(build.id, B1, io.BytesIO(HONEST), report)
    assert env.builds.get_build(build.id).status is BuildStatus.RUNNING


def test_the_models_tolerance_override_decides(env: Env) -> None:
    (build,) = env.request(kinds=["onnx-int8-qdq"])
    assert env.queue.claim(B1, ONNX_BUILDER) is not None
    off_by_three = linear_model(bias_shift=3.0)  # measured: max abs 3.0, cosine 0.88
    done = env.queue.complete(build.id, B1, io.BytesIO(off_by_three), figures(0.0))
    assert done.status is BuildStatus.SUCCEEDED  # int8 default atol 0.25 would reject; the model allows 5.0
    assert done.parity is not None and round(done.parity["outputs"][0]["max_abs"], 3) == 3.0


def register(env: Env, principal: Principal, compute_capability: str = "8.7", tensorrt: str = "10.x") -> None:
    env.store.save_registration(
        BuilderRegistration(
            principal.subject, principal.name, compute_capability, tensorrt, None, ADMIN.subject, env.clock()
        )
    )


def plan_report(**hardware: str) -> dict[str, Any]:
    return figures(0.0) | {"hardware": {"compute_capability": "8.7", "tensorrt_version": "10.3.0"} | hardware}


def test_a_plan_reported_from_other_hardware_fails(env: Env) -> None:
    register(env, ORIN)
    builds = env.request(targets=["jetson-orin"], kinds=["tensorrt-plan"])
    plan = next(b for b in builds if b.tensorrt_version == "10.3.0")
    task = env.queue.claim(ORIN, ORIN_BUILDER)
    assert task is not None and task.build_id == plan.id
    done = env.queue.complete(plan.id, ORIN, io.BytesIO(b"plan"), plan_report(compute_capability="8.6"))
    assert done.status is BuildStatus.FAILED and "compute_capability 8.6" in (done.error or "")


@pytest.mark.parametrize(
    ("registration", "claims"),
    [
        pytest.param(None, False, id="unregistered"),
        pytest.param(("8.6", "10.x"), False, id="registered-for-another-gpu"),
        pytest.param(("8.7", "8.6"), False, id="registered-for-another-tensorrt"),
        pytest.param(("8.7", "10.3"), True, id="registered-for-it"),
    ],
)
def test_a_plan_goes_only_to_a_builder_registered_for_its_hardware(
    env: Env, registration: tuple[str, str] | None, claims: bool
) -> None:
    if registration is not None:
        register(env, ORIN, *registration)
    builds = env.request(targets=["jetson-orin"], kinds=["tensorrt-plan"])
    plan = next(b for b in builds if b.tensorrt_version == "10.3.0")
    task = env.queue.claim(ORIN, ORIN_BUILDER)
    assert (task is not None and task.build_id == plan.id) is claims
    if not claims:
        with pytest.raises(LeaseLost):  # it never held it, so it cannot deliver it either
            env.queue.complete(plan.id, ORIN, io.BytesIO(b"plan"), plan_report())
        assert env.store.get_build(plan.id).status is BuildStatus.QUEUED  # type: ignore[union-attr]
        assert env.builds.get_build(plan.id).status is BuildStatus.WAITING_FOR_BUILDER
        return
    done = env.queue.complete(plan.id, ORIN, io.BytesIO(b"plan"), plan_report())
    assert done.status is BuildStatus.SUCCEEDED and done.parity is not None
    assert done.parity["measured_by"] == "builder" and done.manifest["builder"]["subject"] == ORIN.subject


def test_a_plan_whose_builder_lost_its_registration_mid_build_is_refused(env: Env) -> None:
    register(env, ORIN)
    builds = env.request(targets=["jetson-orin"], kinds=["tensorrt-plan"])
    plan = next(b for b in builds if b.tensorrt_version == "10.3.0")
    assert env.queue.claim(ORIN, ORIN_BUILDER) is not None
    register(env, ORIN, "8.6", "10.x")  # an admin re-registered it for other hardware
    with pytest.raises(Forbidden, match=r"compute capability 8\.6"):
        env.queue.complete(plan.id, ORIN, io.BytesIO(b"plan"), plan_report())
    held = env.store.get_build(plan.id)
    assert held is not None and (held.status, held.manifest_signature, held.artifact_sha256) == (
        BuildStatus.RUNNING, None, None
    )  # fmt: skip


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
    # An unregistered builder with the right GPU does not make a plan stop waiting; a registered one does.
    env.store.see_builder(BuilderRecord("orin-1", "orin", ORIN_BUILDER.as_dict(), env.clock(), ORIN.subject))
    assert env.builds.get_build(views[("tensorrt-plan", "10.3.0")].build.id).status is BuildStatus.WAITING_FOR_BUILDER
    register(env, ORIN)
    assert env.builds.get_build(views[("tensorrt-plan", "10.3.0")].build.id).status is BuildStatus.QUEUED
    env.clock.advance(61)  # the builder has not been heard from within the window
    assert env.builds.get_build(builds[0].id).status is BuildStatus.WAITING_FOR_BUILDER


def test_same_key_same_build_and_a_failed_one_is_queued_again(env: Env) -> None:
    (build,) = env.request()
    (again,) = env.request()
    assert again.id == build.id
    assert env.queue.claim(B1, ONNX_BUILDER) is not None
    failed = env.queue.fail(build.id, B1, "toolchain exploded")
    assert (failed.status, failed.error) == (BuildStatus.FAILED, "toolchain exploded")
    (retried,) = env.request()
    assert (retried.id, retried.status, retried.error) == (build.id, BuildStatus.QUEUED, None)


def test_recover_requeues_only_the_in_process_builders_builds(env: Env) -> None:
    own = builtin_principal()
    (mine,) = env.request()
    env.clock.advance(1)
    (theirs,) = env.request(kinds=["onnx-int8-qdq"])
    assert env.queue.claim(own, replace(ONNX_BUILDER, builder_id="control-plane@h/0")) is not None
    assert env.queue.claim(B1, replace(ONNX_BUILDER, builder_id="control-plane@h/0")) is not None  # same label
    assert env.queue.recover({own.subject}) == 1
    assert env.builds.get_build(mine.id).build.status is BuildStatus.QUEUED
    assert env.builds.get_build(theirs.id).build.status is BuildStatus.RUNNING


OPERATOR = Principal("token:op", "ops", Role.OPERATOR)


def waiting(env: Env) -> str:
    (build,) = env.request()
    return str(build.id)


def queued(env: Env) -> str:
    (build,) = env.request()
    env.store.see_builder(BuilderRecord("b1", "h", ONNX_BUILDER.as_dict(), env.clock(), B1.subject))
    assert env.builds.get_build(build.id).status is BuildStatus.QUEUED
    return str(build.id)


def running(env: Env) -> str:
    (build,) = env.request()
    assert env.queue.claim(B1, ONNX_BUILDER) is not None
    return str(build.id)


@pytest.mark.parametrize("make", [pytest.param(f, id=f.__name__) for f in (waiting, queued, running)])
def test_cancel_stops_a_build_in_each_unfinished_state_for_good(env: Env, make: Any) -> None:
    build_id = make(env)
    cancelled = env.builds.cancel(build_id, OPERATOR)
    assert cancelled.status is BuildStatus.CANCELLED and cancelled.build.message == "cancelled by ops"
    assert env.queue.claim(B1, ONNX_BUILDER) is None  # nobody takes it any more
    with pytest.raises(LeaseLost, match="cancelled"):  # the builder that held it is told to stop
        env.queue.heartbeat(build_id, B1, "still working", 0.9)
    with pytest.raises(LeaseLost, match="cancelled"):
        env.queue.complete(build_id, B1, io.BytesIO(HONEST), figures(0.0))
    assert env.queue.recover({B1.subject, builtin_principal().subject}) == 0  # a restart does not revive it
    env.clock.advance(3600)
    assert env.queue.expire_leases() == 0
    final = env.store.get_build(build_id)
    assert final is not None and (final.status, final.manifest_signature) == (BuildStatus.CANCELLED, None)
    assert "cancelled by ops" in env.builds.logs(build_id)


@pytest.mark.parametrize(
    "finish",
    [
        pytest.param(lambda env, b: env.queue.complete(b, B1, io.BytesIO(HONEST), figures(0.0)), id="succeeded"),
        pytest.param(lambda env, b: env.queue.fail(b, B1, "broke"), id="failed"),
        pytest.param(lambda env, b: env.builds.cancel(b, OPERATOR), id="cancelled"),
    ],
)
def test_a_finished_build_cannot_be_cancelled(env: Env, finish: Any) -> None:
    build_id = running(env)
    finish(env, build_id)
    before = env.store.get_build(build_id)
    with pytest.raises(Conflict, match="only a queued or running build can be cancelled"):
        env.builds.cancel(build_id, OPERATOR)
    assert env.store.get_build(build_id) == before


def test_a_cancelled_build_asked_for_again_is_queued_again(env: Env) -> None:
    (build,) = env.request()
    env.builds.cancel(build.id, OPERATOR)
    (again,) = env.request()
    assert (again.id, again.status) == (build.id, BuildStatus.QUEUED)
