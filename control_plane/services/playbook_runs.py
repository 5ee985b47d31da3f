"""Playbook runs: validate a request against the fleet, queue it, run it on a worker pool, store its events and
per-host results, and feed what the hosts handed back (`edge_result`) into the fleet.

A host's `edge_result.reported` goes to the fleet's `accept_report`, the same path as a report its agent published
over MQTT (so the rollout executor is woken the same way); `edge_result.hardware` becomes its hardware facts.
Results are untrusted: bad data is logged and ignored, never raised. Extra vars are checked against what the
playbook declares (control_plane.domain.playbook_vars) before anything else; the run record, its host results and
its events are stored redacted (secret-looking values as `***`, secret values scrubbed from messages), while the
real values go to the runner in memory only. The run itself (ansible-runner) is behind
the `PlaybookRunner` port. Every run reaches a final status exactly once; `on_finished` is then called once,
whatever the status.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from control_plane.domain.errors import Conflict, InvalidInput, NotFound, ServiceError
from control_plane.domain.fleet import Device
from control_plane.domain.identity import ApiToken, Role
from control_plane.domain.playbook_vars import (
    Declarations,
    check_extra_vars,
    redact,
    scrub,
    scrub_data,
    secret_values,
)
from control_plane.domain.playbooks import (
    TUNNEL,
    HostResult,
    HostStatus,
    PlaybookJob,
    PlaybookOutcome,
    PlaybookRun,
    PlaybookRunRequest,
    RunEvent,
    RunStatus,
)
from control_plane.domain.selectors import SelectorError, parse_selector
from control_plane.services.ports import Clock, FleetStore, PlaybookRunner, PlaybookRunStore
from edge_agent.protocol import HardwareFacts, ReportedState
from edge_agent.protocol.topics import validate_device_id
from edge_agent.protocol.vocabulary import Channel

log = logging.getLogger(__name__)

AcceptReport = Callable[[ReportedState], None]
RunFinished = Callable[[PlaybookRun], None]
RESTARTED_REASON = "the control plane restarted during the run"
STOPPED_REASON = "the control plane stopped before the run started"
MAX_HOSTS = 10_000


@dataclass
class _Pending:
    """A submitted run this process owns: what only lives in memory (unredacted vars, host vars, the hook)."""

    job: PlaybookJob
    on_finished: RunFinished | None
    secrets: frozenset[str] = frozenset()  # the secret values of the extra vars, scrubbed from what is stored
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False


class RunTokens(Protocol):
    """Issues the short-lived token a run that calls the control plane back (provision enrolls, decommission
    forgets) acts with, and revokes it when the run ends (IdentityService)."""

    def create_token(
        self, name: str, role: Role, created_by: str, expires_at: datetime | None = None, device_id: str | None = None
    ) -> tuple[ApiToken, str]: ...
    def revoke(self, token_id: str) -> ApiToken: ...


TunnelProxy = Callable[[str], str]  # device id -> the shell command that reaches its ssh service (a ProxyCommand)

# The token variable the edge_agent role sends to the control plane (playbooks/roles/edge_agent/vars/main.yml).
RUN_TOKEN_VAR = "edge_control_plane_token"  # noqa: S105 (a variable's name)


class PlaybookRunService:
    def __init__(
        self,
        store: PlaybookRunStore,
        fleet_store: FleetStore,
        runner: PlaybookRunner,
        clock: Clock,
        accept_report: AcceptReport,
        workers: int = 2,
        declared_vars: Declarations | None = None,
        run_tokens: RunTokens | None = None,
        run_token_lifetime: timedelta = timedelta(hours=1),
        tunnel_proxy: TunnelProxy | None = None,
    ) -> None:
        """`declared_vars`: the extra vars each playbook takes from a request (playbooks/api_vars.yml); a playbook
        not in it takes none."""
        self._store = store
        self._fleet = fleet_store
        self._runner = runner
        self._clock = clock
        self._accept_report = accept_report
        self._declared: Declarations = declared_vars or {}
        self._run_tokens = run_tokens
        self._run_token_lifetime = run_token_lifetime
        self._tunnel_proxy = tunnel_proxy
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="playbook-run")

    # -- commands ---------------------------------------------------------------------------------------------
    def submit(
        self,
        request: PlaybookRunRequest,
        purpose: str | None = None,
        host_vars: Mapping[str, Mapping[str, Any]] | None = None,
        on_finished: RunFinished | None = None,
    ) -> PlaybookRun:
        """Queue a run on the request's hosts (or the Ansible devices its selector matches); 202-style: returns
        the queued run at once. `host_vars` adds inventory variables per device id (e.g. the bundle to push).
        Extra vars the playbook does not declare, `ansible_*` ones and values holding a template are refused."""
        problems = check_extra_vars(request.playbook, self._declared.get(request.playbook, {}), request.extra_vars)
        if problems:
            raise InvalidInput("; ".join(problems))
        devices = self._resolve_hosts(request)
        extra = dict(host_vars or {})
        unknown = sorted(set(extra) - {d.id for d in devices})
        if unknown:
            raise InvalidInput(f"host_vars name devices that are not in the run: {', '.join(unknown)}")
        self._runner.check_available()
        run = PlaybookRun(
            id=uuid.uuid4().hex[:16],
            playbook=request.playbook,
            status=RunStatus.QUEUED,
            hosts=tuple(HostResult(d.id, HostStatus.PENDING) for d in devices),
            extra_vars=redact(request.extra_vars),
            created_at=self._clock(),
            purpose=purpose,
            selector=request.selector if not request.hosts else None,
        )
        inventory = {d.id: {**self._connection_vars(d), **dict(extra.get(d.id, {}))} for d in devices}
        job = PlaybookJob(run.id, request.playbook, inventory, dict(request.extra_vars))
        self._store.save_run(run)
        with self._lock:
            self._pending[run.id] = _Pending(job, on_finished, secret_values(request.extra_vars))
        self._executor.submit(self._work, run.id)
        return run

    def cancel(self, run_id: str) -> PlaybookRun:
        """A queued run is cancelled at once; a running one is asked to stop (it ends `cancelled` shortly)."""
        run = self.get(run_id)
        with self._lock:
            pending = self._pending.get(run_id)
            if pending is not None and pending.started:
                pending.cancel.set()
                return run
            if pending is not None:
                del self._pending[run_id]  # the worker finds nothing to do
        if pending is None:
            raise Conflict(f"playbook run {run_id} is {run.status.value}: only a queued or running run stops")
        cancelled = replace(run, status=RunStatus.CANCELLED, finished_at=self._clock())
        self._store.save_run(cancelled)
        _call_finished(pending.on_finished, cancelled)
        return cancelled

    def recover(self) -> list[PlaybookRun]:
        """At startup: runs a previous process left queued or running are failed (their hosts unknown)."""
        now = self._clock()
        failed = []
        for run in self._store.list_runs(1_000_000, (RunStatus.QUEUED, RunStatus.RUNNING)):
            with self._lock:
                if run.id in self._pending:
                    continue
            done = replace(run, status=RunStatus.FAILED, finished_at=now, error=RESTARTED_REASON)
            failed.append(self._store.save_run(done))
        return failed

    def shutdown(self) -> None:
        """Stop running playbooks (they end cancelled), drop the queue, fail what never started."""
        with self._lock:
            for pending in self._pending.values():
                pending.cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        now = self._clock()
        with self._lock:
            left = list(self._pending)
            self._pending.clear()
        for run_id in left:
            run = self._store.get_run(run_id)
            if run is not None and not run.status.final:
                self._store.save_run(replace(run, status=RunStatus.FAILED, finished_at=now, error=STOPPED_REASON))

    # -- queries ----------------------------------------------------------------------------------------------
    def get(self, run_id: str) -> PlaybookRun:
        run = self._store.get_run(run_id)
        if run is None:
            raise NotFound(f"playbook run {run_id!r} is not known")
        return run

    def list_runs(self, limit: int = 50) -> list[PlaybookRun]:
        return self._store.list_runs(limit)

    def events_since(self, run_id: str, after_id: int, limit: int = 1000) -> list[RunEvent]:
        return self._store.events_since(run_id, after_id, limit)

    # -- validation -------------------------------------------------------------------------------------------
    def _resolve_hosts(self, request: PlaybookRunRequest) -> list[Device]:
        if (request.selector is None) == (not request.hosts):
            raise InvalidInput("give either a selector or hosts (device ids), exactly one of them")
        if request.hosts:
            return self._named_hosts(request.hosts)
        try:
            selector = parse_selector(request.selector)
        except SelectorError as exc:
            raise InvalidInput(f"selector: {exc}") from exc
        chosen = [  # the selector is evaluated by the database: only the matching devices are read
            d for d in self._fleet.select_devices(selector) if d.channel is Channel.ANSIBLE and d.ansible is not None
        ]
        if not chosen:
            raise InvalidInput(f"selector {request.selector!r} matches no device on the Ansible channel")
        return chosen

    def _named_hosts(self, hosts: Sequence[str]) -> list[Device]:
        if len(hosts) > MAX_HOSTS:
            raise InvalidInput(f"hosts: at most {MAX_HOSTS} devices per run")
        for host in hosts:
            try:
                validate_device_id(host)
            except ValueError as exc:
                raise InvalidInput(f"hosts: {exc}") from exc
        ids = list(dict.fromkeys(hosts))
        found = self._fleet.get_devices(ids)  # one query, not one per host
        unknown = [i for i in ids if i not in found]
        if unknown:
            raise InvalidInput(f"hosts: unknown devices: {', '.join(unknown)}")
        unreachable = [i for i in ids if found[i].ansible is None]
        if unreachable:
            raise Conflict(
                f"devices without an Ansible connection (enroll them with channel ansible): {', '.join(unreachable)}"
            )
        return [found[i] for i in ids]

    def _connection_vars(self, device: Device) -> dict[str, Any]:
        if device.ansible is None:
            return {}
        if device.ansible.connection == TUNNEL:
            if self._tunnel_proxy is None:
                raise Conflict(f"{device.id} is reached through its tunnel, and this control plane has none")
            return device.ansible.inventory_vars(self._tunnel_proxy(device.id))
        return device.ansible.inventory_vars()

    # -- the worker -------------------------------------------------------------------------------------------
    def _work(self, run_id: str) -> None:
        with self._lock:
            pending = self._pending.get(run_id)
            if pending is None:
                return  # cancelled while queued
            pending.started = True
        try:
            self._execute(run_id, pending)
        except Exception:
            log.exception("playbook run %s failed in the control plane", run_id)
        finally:
            with self._lock:
                self._pending.pop(run_id, None)

    def _execute(self, run_id: str, pending: _Pending) -> None:
        running = replace(self.get(run_id), status=RunStatus.RUNNING, started_at=self._clock())
        self._store.save_run(running)
        token_id, pending = self._with_run_token(pending)
        try:
            outcome = self._runner.run(
                pending.job, lambda event: self._store_event(event, pending.secrets), pending.cancel.is_set
            )
        except ServiceError as exc:
            outcome = PlaybookOutcome(RunStatus.FAILED, running.hosts, error=str(exc))
        except Exception as exc:  # a bug in the runner: the run still ends, with the reason
            log.exception("the runner failed on playbook run %s", run_id)
            outcome = PlaybookOutcome(RunStatus.FAILED, running.hosts, error=f"internal error: {exc}")
        finally:
            if token_id is not None and self._run_tokens is not None:
                self._run_tokens.revoke(token_id)
        if pending.cancel.is_set() and outcome.status is RunStatus.FAILED and outcome.error is None:
            outcome = replace(outcome, status=RunStatus.CANCELLED)
        for host in outcome.hosts:
            self._take_result(host)
        final = replace(
            running,
            status=outcome.status,
            hosts=tuple(_shown(h, pending.secrets) for h in outcome.hosts),
            finished_at=self._clock(),
            rc=outcome.rc,
            error=None if outcome.error is None else scrub(outcome.error, pending.secrets),
        )
        self._store.save_run(final)
        _call_finished(pending.on_finished, final)

    def _with_run_token(self, pending: _Pending) -> tuple[str | None, _Pending]:
        """A playbook that calls the control plane back gets an operator token of its own, for this run only:
        it expires with the run's longest life and is revoked when the run ends; it is scrubbed like a secret."""
        job = pending.job
        if self._run_tokens is None or not job.playbook.calls_control_plane or RUN_TOKEN_VAR in job.extra_vars:
            return None, pending
        token, secret = self._run_tokens.create_token(
            f"playbook-run-{job.run_id}",
            Role.OPERATOR,
            f"playbook-run:{job.run_id}",
            expires_at=self._clock() + self._run_token_lifetime,
        )
        with_token = replace(job, extra_vars={**job.extra_vars, RUN_TOKEN_VAR: secret})
        return token.id, replace(pending, job=with_token, secrets=pending.secrets | {secret})

    def _store_event(self, event: RunEvent, secrets: frozenset[str]) -> None:
        task = None if event.task is None else scrub(event.task, secrets)
        self._store.add_events([replace(event, task=task, message=scrub(event.message, secrets))])

    def _take_result(self, host: HostResult) -> None:
        """Feed one host's `edge_result` into the fleet; bad data is logged and dropped."""
        now = self._clock()
        try:
            if host.status not in (HostStatus.PENDING, HostStatus.UNREACHABLE):
                self._fleet.mark_seen(host.host, now)
            result = host.result or {}
            if result.get("hardware") is not None:
                self._fleet.apply_hardware(host.host, HardwareFacts.model_validate(result["hardware"]), now)
            if result.get("reported") is not None:
                reported = ReportedState.model_validate(result["reported"])
                if reported.device_id != host.host:
                    log.warning("host %s handed back the reported state of %s: ignored", host.host, reported.device_id)
                    return
                self._accept_report(reported)
        except (ValidationError, ValueError, TypeError, AttributeError) as exc:
            log.warning("ignored the malformed result of host %s: %s", host.host, exc)


def _shown(host: HostResult, secrets: frozenset[str]) -> HostResult:
    """A host's result as stored and shown: redacted, and without the run's secret values in its message."""
    return replace(
        host,
        result=None if host.result is None else scrub_data(redact(host.result), secrets),
        message=None if host.message is None else scrub(host.message, secrets),
    )


def _call_finished(hook: RunFinished | None, run: PlaybookRun) -> None:
    if hook is None:
        return
    try:
        hook(run)
    except Exception:
        log.exception("the on_finished hook of playbook run %s failed", run.id)
