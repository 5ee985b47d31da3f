"""`GET /v1/rollouts/{id}/events` over a real uvicorn server, read with httpx streaming.

The route is served by the real FastAPI app machinery (router, dependencies, error handlers) on loopback; the
rollout service behind it is a stand-in holding records in memory (named `RecordedRollouts`) so that the tests
can append events and change the phase at chosen moments. The end-to-end run with real rollouts is in
tests/integration/cli/test_watch_rollout.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from control_plane.api import deps, sse
from control_plane.api.errors import install_error_handlers
from control_plane.api.routes import rollout_events
from control_plane.domain.errors import NotFound
from control_plane.domain.rollout_events import RolloutEventRecord
from control_plane.domain.rollout_progress import RolloutPhase
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration


@dataclass
class RecordedRollouts:
    """Stand-in for RolloutService's read side: `phase_of(id)` and `events_since(id, after)`."""

    phase: RolloutPhase = RolloutPhase.IN_PROGRESS
    records: list[RolloutEventRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, message: str, **data: Any) -> RolloutEventRecord:
        with self.lock:
            record = RolloutEventRecord(
                id=len(self.records) + 1,
                rollout_id="r1",
                at=datetime(2025, 1, 1, tzinfo=UTC),
                kind=kind,
                device_id=data.pop("device_id", None),
                step=data.pop("step", None),
                message=message,
                data=data,
            )
            self.records.append(record)
            return record

    def finish(self, phase: RolloutPhase) -> None:
        with self.lock:  # the final phase and its event land together, as in one transaction
            self.phase = phase
            self.records.append(
                RolloutEventRecord(
                    len(self.records) + 1,
                    "r1",
                    datetime(2025, 1, 1, tzinfo=UTC),
                    "phase",
                    None,
                    None,
                    f"rollout {phase.value}",
                    {"phase": phase.value},
                )
            )

    def phase_of(self, rollout_id: str) -> RolloutPhase:
        phase: RolloutPhase = self.get_rollout(rollout_id).phase
        return phase

    def get_rollout(self, rollout_id: str) -> SimpleNamespace:
        if rollout_id != "r1":
            raise NotFound(f"rollout {rollout_id!r} does not exist")
        with self.lock:
            return SimpleNamespace(id=rollout_id, phase=self.phase)

    def events_since(self, rollout_id: str, after_id: int) -> list[RolloutEventRecord]:
        with self.lock:
            return [r for r in self.records if r.rollout_id == rollout_id and r.id > after_id]


@pytest.fixture
def rollouts() -> RecordedRollouts:
    return RecordedRollouts()


@pytest.fixture
def url(rollouts: RecordedRollouts, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(sse, "POLL_INTERVAL_S", 0.05)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(rollout_events.router)
    app.dependency_overrides[deps._rollouts] = lambda: rollouts

    @app.get("/v1/rollouts/{rollout_id}")
    def rollout_json(rollout_id: str) -> dict[str, Any]:  # what `edgectl rollout watch` re-reads on each event
        found = rollouts.get_rollout(rollout_id)
        return {"id": rollout_id, "model": "lin", "version": 2, "phase": found.phase.value, "devices": []}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def read_events(response: httpx.Response, blocks: list[dict[str, str]]) -> None:
    """Parse `text/event-stream` into blocks ({id, event, data} or {comment}) until the server ends it."""
    block: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if block:
                blocks.append(block)
            block = {}
        elif line.startswith(":"):
            blocks.append({"comment": line[1:].strip()})
        else:
            key, _, value = line.partition(":")
            block[key] = value.removeprefix(" ")


def stream(url: str, blocks: list[dict[str, str]], **kwargs: Any) -> threading.Thread:
    def run() -> None:
        with httpx.stream("GET", f"{url}/v1/rollouts/r1/events", timeout=30, **kwargs) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            read_events(response, blocks)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def events_of(blocks: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(b["id"], b["event"]) for b in blocks if "event" in b]


def test_replays_then_follows_in_order_and_closes_after_the_final_phase(url, rollouts):
    rollouts.add("created", "rollout of lin v2 to 2 device(s)")
    rollouts.add("step_started", "canary started", step="canary")
    blocks: list[dict[str, str]] = []
    reader = stream(url, blocks)

    wait_for(lambda: len(events_of(blocks)) == 2, what="replayed events")
    rollouts.add("device_status", "dev-1 activated", device_id="dev-1", step="canary", status="activated")
    rollouts.add("gate_passed", "canary gates passed", step="canary")
    wait_for(lambda: len(events_of(blocks)) == 4, what="followed events")
    assert reader.is_alive()  # not final yet: the stream stays open
    rollouts.finish(RolloutPhase.SUCCEEDED)
    reader.join(timeout=10)

    assert not reader.is_alive(), "the stream did not end after the final phase"
    assert events_of(blocks) == [
        ("1", "created"),
        ("2", "step_started"),
        ("3", "device_status"),
        ("4", "gate_passed"),
        ("5", "phase"),
    ]
    status = json.loads(blocks[2]["data"])
    assert status["device_id"] == "dev-1" and status["step"] == "canary" and status["data"] == {"status": "activated"}
    assert json.loads(blocks[-1]["data"])["data"] == {"phase": "succeeded"}


@pytest.mark.parametrize(
    "resume",
    [
        pytest.param({"headers": {"Last-Event-ID": "2"}}, id="last-event-id"),
        pytest.param({"params": {"after": 2}}, id="after-query"),
        pytest.param({"headers": {"Last-Event-ID": "2"}, "params": {"after": 0}}, id="header-wins"),
    ],
)
def test_a_resumed_stream_skips_what_was_seen(url, rollouts, resume):
    for kind in ("created", "step_started", "published", "gate_passed"):
        rollouts.add(kind, kind)
    rollouts.finish(RolloutPhase.ROLLED_BACK)
    blocks: list[dict[str, str]] = []

    stream(url, blocks, **resume).join(timeout=10)

    assert events_of(blocks) == [("3", "published"), ("4", "gate_passed"), ("5", "phase")]


def test_a_finished_rollout_streams_its_history_and_ends(url, rollouts):
    rollouts.add("created", "created")
    rollouts.finish(RolloutPhase.ABORTED)
    with httpx.Client(timeout=10) as client:
        body = client.get(f"{url}/v1/rollouts/r1/events").text
        nothing_left = client.get(f"{url}/v1/rollouts/r1/events", headers={"Last-Event-ID": "2"}).text

    assert body.startswith("id: 1\nevent: created\ndata: {") and "id: 2\nevent: phase\n" in body
    assert nothing_left == ""


def test_unknown_rollout_is_404_and_a_bad_last_event_id_is_422(url):
    with httpx.Client(timeout=10) as client:
        missing = client.get(f"{url}/v1/rollouts/nope/events")
        bad = client.get(f"{url}/v1/rollouts/r1/events", headers={"Last-Event-ID": "abc"})
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]


def test_an_idle_stream_sends_comment_heartbeats(url, rollouts, monkeypatch):
    monkeypatch.setattr(sse, "HEARTBEAT_INTERVAL_S", 0.2)
    rollouts.add("created", "created")
    blocks: list[dict[str, str]] = []
    reader = stream(url, blocks)

    wait_for(lambda: {"comment": "heartbeat"} in blocks, what="a heartbeat")
    rollouts.finish(RolloutPhase.SUCCEEDED)
    reader.join(timeout=10)
    assert events_of(blocks) == [("1", "created"), ("2", "phase")]
