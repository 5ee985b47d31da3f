"""Fuzzing the agent's parsers of desired states: the MQTT callback of a real daemon (`Daemon._on_desired`, which
paho calls for every message on `edge/devices/{id}/desired`, then its apply worker and the core's signature and
document checks), and the Ansible channel's `parse_desired` (what `edge-agent apply` reads from a file).

Anyone who can publish on a device's desired topic (or hand a file to a playbook) can send anything. For every bad
message - bytes, JSON that is no envelope, an envelope of another kind or version, a body that is no signed
document, a forged, re-keyed or tampered signature, a signed document that breaks the contract, one for another
device, an older generation, the applied generation replayed - nothing raises, the refusal is said with its
reason (a `rejected` event, the one the control plane is sent; a replay is ignored with a log line), and nothing is
stored: the journal on disk is the same bytes, no slot or download appears, the same models are served.

Bounded for CI (docs/security.md, "Fuzzing"): a few hundred derandomized examples; EDGE_FUZZ_EXAMPLES for more.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from edge_agent.config import AgentConfig
from edge_agent.core.reconcile import DecisionKind
from edge_agent.daemon import Daemon, parse_desired
from edge_agent.protocol import (
    DesiredState,
    MessageKind,
    ProtocolError,
    SignedDesiredState,
    Signer,
    canonical_json,
)
from tests.fuzzing import fuzz_settings

pytestmark = pytest.mark.fuzz

DEVICE = "dev-1"
APPLIED = 5  # the generation the agent runs when the fuzzing starts
ISSUED_AT = datetime(2030, 1, 1, tzinfo=UTC)
ANSWER_S = 10.0  # the worker answers a queued message in milliseconds; this only bounds a missing answer
PER_MESSAGE = timedelta(seconds=15)


@dataclass
class Agent:
    daemon: Daemon
    signer: Signer
    data_dir: Path
    records: list[logging.LogRecord] = field(default_factory=list)
    answered: threading.Event = field(default_factory=threading.Event)

    @property
    def journal(self) -> bytes:
        return (self.data_dir / "journal.json").read_bytes()

    def on_disk(self) -> tuple[bytes, list[str]]:
        """The journal and every file or folder of the data directory (but the worker's lock file): what an apply
        would change."""
        paths = (str(p.relative_to(self.data_dir)) for p in self.data_dir.rglob("*"))
        return self.journal, sorted(p for p in paths if p != "apply.lock")

    def answers(self) -> list[logging.LogRecord]:
        return [r for r in self.records if _is_answer(r)]


def _is_answer(record: logging.LogRecord) -> bool:
    """The daemon's line for each event it sends (`event rejected gen=...`), or the core's for a replay."""
    text = record.getMessage()
    return text.startswith("event rejected") or text.startswith("desired state ignored")


class _Listen(logging.Handler):
    def __init__(self, agent: Agent) -> None:
        super().__init__(logging.DEBUG)
        self._agent = agent

    def emit(self, record: logging.LogRecord) -> None:
        self._agent.records.append(record)
        if _is_answer(record):
            self._agent.answered.set()


def desired(generation: int, device_id: str = DEVICE) -> DesiredState:
    return DesiredState(device_id=device_id, generation=generation, issued_at=ISSUED_AT, models=[])


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    signer = Signer.generate()
    data_dir = tmp_path_factory.mktemp("agent-fuzz") / "data"
    config = AgentConfig(
        device_id=DEVICE,
        data_dir=data_dir,
        control_plane_public_key=signer.public_key_b64,
        gpu_class="cpu-x86_64",
        mqtt={"enabled": False},  # the link is never started: the test is the broker, calling the callback
    )
    daemon = Daemon(config)
    daemon.core.recover()
    assert daemon.core.handle(signer.sign_desired(desired(APPLIED))).ok
    agent = Agent(daemon, signer, data_dir)
    logger = logging.getLogger("edge_agent")
    handler, level = _Listen(agent), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    daemon.worker.start()
    try:
        yield agent
    finally:
        daemon.worker.stop()
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- bad messages -------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
DELETE = object()
# (field of the DesiredState document, a value the contract refuses there)
INVALID_DOCUMENT_FIELDS: list[tuple[str, Any]] = [
    ("device_id", ""),
    ("device_id", "dev 1"),
    ("device_id", "../dev-1"),
    ("device_id", DELETE),
    ("generation", 0),
    ("generation", -1),
    ("generation", "six"),
    ("generation", 6.5),
    ("generation", None),
    ("generation", DELETE),
    ("issued_at", "soon"),
    ("issued_at", None),
    ("issued_at", DELETE),
    ("rollout_id", "r" * 65),
    ("models", "everything"),
    ("models", [{}]),
    ("models", [{"name": "m"}] * 33),
    ("models", [{"name": "../m", "version": 1}]),
    ("unexpected", True),
]
INVALID_ENVELOPES: list[dict[str, Any]] = [
    {"protocol_version": 2},
    {"protocol_version": 2**70},
    {"protocol_version": 0},
    {"msg_id": ""},
    {"msg_id": "m" * 65},
    {"device_id": ""},
    {"sent_at": "never"},
    {"kind": "order"},
    {"body": []},
    {"body": None},
    {"signature": "trust me"},
]


@dataclass(frozen=True)
class Bad:
    why: str
    payload: bytes  # the MQTT payload (an envelope, or not)
    replay: bool = False  # the applied generation again: ignored, not rejected


def sealed(body: Any, changes: dict[str, Any] | None = None) -> bytes:
    envelope = {
        "protocol_version": 1,
        "msg_id": "0123456789abcdef",
        "device_id": "control-plane",
        "sent_at": "2030-01-01T00:00:00Z",
        "kind": MessageKind.DESIRED.value,
        "body": body,
    }
    return json.dumps(envelope | (changes or {})).encode()


def signed_text(signer: Signer, text: str) -> dict[str, Any]:
    return SignedDesiredState(document=text, signature=signer.sign(text.encode()), key_id=signer.key_id).model_dump()


def document_with(change: tuple[str, Any]) -> str:
    key, value = change
    data = desired(APPLIED + 1).model_dump(mode="json")
    if value is DELETE:
        data.pop(key)
    else:
        data[key] = value
    return canonical_json(data)


# Bad whatever the envelope around them (what a desired-state file of the Ansible channel can hold too) ...
BAD_DOCUMENTS = [
    *["body", "oversized", "forged", "rekeyed", "bad-signature", "tampered", "unsigned-json", "other-device"],
    *["older", "replay", *["document"] * 4],
]
# ... and bad envelopes around a good document (MQTT only).
BAD_KINDS = [*BAD_DOCUMENTS, "bytes", "json", "kind", "envelope"]


@st.composite
def bad_messages(draw: st.DrawFn, signer: Signer, kinds: list[str] = BAD_KINDS) -> Bad:
    how = draw(st.sampled_from(kinds))
    good = signer.sign_desired(desired(APPLIED + 1)).model_dump()
    if how == "bytes":
        data = draw(st.binary(min_size=1, max_size=2048))
        return Bad("not JSON", b"\xff" + data if data.strip().startswith(b"{") else data)
    if how == "json":
        return Bad("JSON that is not an envelope", json.dumps(draw(json_values)).encode())
    if how == "kind":
        kind = draw(st.sampled_from([k.value for k in MessageKind if k is not MessageKind.DESIRED]))
        return Bad(f"a {kind} message on the desired topic", sealed(good, {"kind": kind}))
    if how == "envelope":
        changes = draw(st.sampled_from(INVALID_ENVELOPES))
        return Bad(f"an envelope with {changes}", sealed(good, changes))
    if how == "body":
        body = draw(
            st.sampled_from(
                [
                    good | {"document": "{"},
                    good | {"signature": ""},
                    good | {"signature": "s" * 201},
                    good | {"key_id": "k" * 65},
                    good | {"unexpected": 1},
                    {k: v for k, v in good.items() if k != "signature"},
                ]
            )
            | json_values.filter(lambda v: not isinstance(v, dict) or "document" not in v)
        )
        return Bad("a body that is no signed document", sealed(body))
    if how == "oversized":
        return Bad("over the size limit", sealed(good | {"document": " " * 2**20 + good["document"]}))
    if how == "forged":
        forger = Signer.generate()
        return Bad("signed by another key, naming ours", sealed(good | {"signature": forger.sign(b"x")}))
    if how == "rekeyed":
        forger = Signer.generate()
        return Bad("signed by another key, naming it", sealed(signed_text(forger, good["document"])))
    if how == "bad-signature":
        signature = draw(
            st.text(min_size=1, max_size=200) | st.binary(max_size=100).map(lambda b: base64.b64encode(b).decode())
        )
        return Bad("a signature that is not ours", sealed(good | {"signature": signature}))
    if how == "tampered":
        document = good["document"]
        at = draw(st.integers(0, len(document) - 1))
        replacement = draw(st.text(min_size=1, max_size=3).filter(lambda t: t != document[at]))
        return Bad(
            "a document changed after signing",
            sealed(good | {"document": document[:at] + replacement + document[at + 1 :]}),
        )
    if how == "unsigned-json":
        text = json.dumps(draw(json_values))
        if len(text) < 2:
            text = f"[{text}]"
        return Bad("a signed document that is no desired state", sealed(signed_text(signer, text)))
    if how == "document":
        change = draw(st.sampled_from(INVALID_DOCUMENT_FIELDS))
        return Bad(
            f"a signed document with {change[0]} {str(change[1])[:30]}",
            sealed(signed_text(signer, document_with(change))),
        )
    if how == "other-device":
        other = draw(st.sampled_from(["dev-2", "DEV-1", "dev-10", "dev-1.old"]))
        return Bad(
            "a signed document for another device",
            sealed(signer.sign_desired(desired(APPLIED + 1, other)).model_dump()),
        )
    if how == "older":
        generation = draw(st.integers(1, APPLIED - 1))
        return Bad(
            "a signed document of an older generation", sealed(signer.sign_desired(desired(generation)).model_dump())
        )
    return Bad("the applied generation again", sealed(signer.sign_desired(desired(APPLIED)).model_dump()), replay=True)


@given(data=st.data())
@fuzz_settings(ci_examples=600, deadline=PER_MESSAGE)
def test_every_bad_desired_message_is_refused_with_its_reason_and_nothing_is_stored(
    agent: Agent, data: st.DataObject
) -> None:
    message = data.draw(bad_messages(agent.signer))
    event(message.why.split(" with ")[0])
    before, served = agent.on_disk(), agent.daemon.core.table.current().models
    agent.records.clear()
    agent.answered.clear()

    agent.daemon._on_desired(message.payload)  # what paho's thread calls; raising here fails the test

    assert agent.answered.wait(ANSWER_S), f"{message.why}: no answer; said {[r.getMessage() for r in agent.records]}"
    answer = agent.answers()[0]
    if message.replay:
        assert answer.getMessage().startswith("desired state ignored"), answer.getMessage()
    else:
        assert answer.getMessage().startswith("event rejected"), answer.getMessage()
        assert str(answer.args[-1]).strip(), f"{message.why}: rejected without a reason"
    assert agent.on_disk() == before, f"{message.why}: something of a refused message was stored"
    assert agent.daemon.core.table.current().models == served
    assert agent.daemon.core.state.applied_generation == APPLIED


def bare(payload: bytes) -> bytes:
    """The envelope's body alone, as a desired-state file holds it (or the payload, when it has none)."""
    try:
        return json.dumps(json.loads(payload)["body"]).encode()
    except (ValueError, TypeError, KeyError):
        return payload


@given(data=st.data())
@fuzz_settings(ci_examples=300, deadline=PER_MESSAGE)
def test_a_desired_state_file_is_refused_with_its_reason_and_nothing_is_stored(
    agent: Agent, data: st.DataObject
) -> None:
    """`edge-agent apply FILE` (the Ansible channel) reads an envelope or the bare signed document: anything else is
    a ProtocolError (exit 2 with its text); a signed document that is bad is refused by the core with a reason."""
    bad = bad_messages(agent.signer, BAD_DOCUMENTS).map(lambda m: m.payload)
    payload = data.draw(st.binary(max_size=2048) | bad | bad.map(bare))
    try:
        signed = parse_desired(payload)
    except ProtocolError as exc:
        event("unreadable")
        assert str(exc).strip()
        return
    event("read, then refused")
    before = agent.on_disk()
    result = agent.daemon.core.handle(signed)
    assert result.reason.strip()
    assert not result.ok or result.outcome is DecisionKind.NOOP  # NOOP: the applied generation again
    assert agent.on_disk() == before
