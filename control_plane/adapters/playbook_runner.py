"""Runs one playbook of `playbooks/` with ansible-runner; the only module that imports `ansible_runner`.

Several runs may go at once (one per worker thread): each has its own directory (mode 0700)
`{data_dir}/playbook-runs/{run_id}/` holding its inventory, the extra vars file and ansible-runner's artifacts,
so no two runs ever share a file. Only a playbook named by `PlaybookName` inside the configured playbooks
directory is run, never an operator-given path.

What came from outside the control plane is data, never a template: the extra vars and each host's variables (its
enrolled connection) are written as YAML with every string tagged `!unsafe`, which Ansible never renders, so a
`{{ lookup('pipe', ...) }}` that got past the API's checks still reaches the play as text. Only the operator's
`ansible.vars` settings stay templates. The extra vars file (mode 0600: it may hold secrets) is removed when the
run ends; ansible-runner gets only its path, never the values on a command line.

Runner events become `RunEvent`s (one line each) and the host results come from the events themselves: a host's
`edge_result` fact, the failing task's message, and its status from the final stats. This module must never
touch the database: the service stores what it returns.

The translation of runner events and stats is pure (module-level functions) and tested without ansible.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from control_plane.adapters.private_files import write_private
from control_plane.domain.errors import Unavailable
from control_plane.domain.playbook_vars import DeclarationError, VarSpec, parse_declarations
from control_plane.domain.playbooks import (
    RESULT_FACT,
    HostResult,
    HostStatus,
    PlaybookJob,
    PlaybookName,
    PlaybookOutcome,
    RunEvent,
    RunStatus,
)
from control_plane.settings import AnsibleSettings

log = logging.getLogger(__name__)

EventCallback = Callable[[RunEvent], None]
CancelCheck = Callable[[], bool]
INSTALL_HINT = "ansible-runner is not installed: pip install 'edge-orchestrator[ansible]'"
DECLARATIONS_FILE = "api_vars.yml"  # in the playbooks directory: the extra vars the API may set, per playbook
MAX_MESSAGE = 500
# ansible-runner polls the cancel callback (and its job timeout) once per pexpect timeout: keep cancel prompt.
_POLL_S = 1

_SHOWN_EVENTS = {
    "playbook_on_play_start",
    "playbook_on_task_start",
    "runner_on_ok",
    "runner_on_failed",
    "runner_on_unreachable",
    "runner_on_skipped",
    "runner_item_on_failed",
    "playbook_on_stats",
}


# -- pure translation of ansible-runner's events -------------------------------------------------------------
def build_inventory(hosts: Mapping[str, Mapping[str, Any]], common: Mapping[str, Any]) -> dict[str, Any]:
    """A YAML inventory: every device id a host with its own variables, `common` for all of them."""
    return {"all": {"hosts": {h: dict(v) for h, v in hosts.items()}, "vars": dict(common)}}


class _Unsafe(str):
    """A string written with the `!unsafe` tag: Ansible takes it as text and never renders it as a template."""


class _UnsafeDumper(yaml.SafeDumper):
    pass


_UnsafeDumper.add_representer(_Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value)))


def as_unsafe(value: Any) -> Any:
    """`value` with every string in it, map keys included, marked `!unsafe` for `unsafe_yaml`."""
    if isinstance(value, Mapping):
        return {_Unsafe(k) if isinstance(k, str) else k: as_unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_unsafe(v) for v in value]
    return _Unsafe(value) if isinstance(value, str) else value


def unsafe_vars(variables: Mapping[str, Any]) -> dict[str, Any]:
    """Variables whose values are all `!unsafe` (the names themselves stay plain: Ansible checks them)."""
    return {name: as_unsafe(value) for name, value in variables.items()}


def unsafe_yaml(document: Any) -> str:
    """YAML of `document` where the strings marked by `as_unsafe` carry the `!unsafe` tag."""
    return yaml.dump(document, Dumper=_UnsafeDumper, sort_keys=True, allow_unicode=True)


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def failure_message(res: Mapping[str, Any]) -> str:
    """What a failed or unreachable task says, in one line."""
    for key in ("msg", "reason", "stderr", "module_stderr", "stdout"):
        value = res.get(key)
        if value:
            return one_line(value)
    return "failed"


def translate_event(run_id: str, event: Mapping[str, Any], now: datetime) -> RunEvent | None:
    """The RunEvent an operator reads for one ansible-runner event, or None for the noise (verbose, starts)."""
    kind = str(event.get("event", ""))
    if kind not in _SHOWN_EVENTS:
        return None
    data = _mapping(event.get("event_data"))
    host = data.get("host") if isinstance(data.get("host"), str) else None
    task = str(data.get("task") or "").strip() or None
    res = _mapping(data.get("res"))
    changed = bool(res.get("changed", False))
    failed = kind in ("runner_on_failed", "runner_on_unreachable", "runner_item_on_failed") and not data.get(
        "ignore_errors"
    )
    if kind == "playbook_on_play_start":
        message = f"play: {data.get('play') or data.get('name') or '?'}"
    elif kind == "playbook_on_task_start":
        message = f"task: {task or '?'}"
    elif kind == "playbook_on_stats":
        message = "stats: " + "; ".join(
            f"{h} {s.value}" for h, s in host_statuses(data, sorted(_hosts_in_stats(data))).items()
        )
    else:
        word = {
            "runner_on_ok": "changed" if changed else "ok",
            "runner_on_failed": "failed" if failed else "failed (ignored)",
            "runner_item_on_failed": "item failed",
            "runner_on_unreachable": "unreachable",
            "runner_on_skipped": "skipped",
        }[kind]
        message = f"{host}: {word}: {task or '?'}"
        if kind in ("runner_on_failed", "runner_on_unreachable", "runner_item_on_failed"):
            message += f": {failure_message(res)}"
    return RunEvent(
        run_id=run_id,
        seq=int(event.get("counter") or 0),
        at=_event_time(event, now),
        kind=kind,
        host=host,
        task=task,
        changed=changed,
        failed=failed,
        message=one_line(message, 2000),
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _event_time(event: Mapping[str, Any], now: datetime) -> datetime:
    created = event.get("created")
    if isinstance(created, str):
        try:
            parsed = datetime.fromisoformat(created)
        except ValueError:
            return now
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    return now


def _hosts_in_stats(stats: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "processed"):
        counts = stats.get(key)
        if isinstance(counts, Mapping):
            names.update(str(h) for h in counts)
    return names


def host_statuses(stats: Mapping[str, Any], hosts: list[str]) -> dict[str, HostStatus]:
    """Each host's status from a `playbook_on_stats` event: unreachable, failed, changed, ok, skipped, or
    pending when the play never reached it."""

    def count(key: str, host: str) -> int:
        counts = stats.get(key)
        return int(counts.get(host, 0)) if isinstance(counts, Mapping) else 0

    out: dict[str, HostStatus] = {}
    for host in hosts:
        if count("dark", host):
            out[host] = HostStatus.UNREACHABLE
        elif count("failures", host):
            out[host] = HostStatus.FAILED
        elif count("changed", host):
            out[host] = HostStatus.CHANGED
        elif count("ok", host):
            out[host] = HostStatus.OK
        elif count("skipped", host):
            out[host] = HostStatus.SKIPPED
        else:
            out[host] = HostStatus.PENDING
    return out


@dataclass
class HostCollector:
    """Accumulates per-host results from a run's events (fed from the runner's event handler)."""

    hosts: list[str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    seen: dict[str, HostStatus] = field(default_factory=dict)  # failed/unreachable as they happen
    stats: dict[str, HostStatus] | None = None

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        data = _mapping(event.get("event_data"))
        if kind == "playbook_on_stats":
            self.stats = host_statuses(data, self.hosts)
            return
        host = data.get("host")
        if not isinstance(host, str) or host not in self.hosts:
            return
        res = _mapping(data.get("res"))
        facts = res.get("ansible_facts")
        if kind == "runner_on_ok" and isinstance(facts, Mapping) and isinstance(facts.get(RESULT_FACT), Mapping):
            self.results[host] = dict(facts[RESULT_FACT])
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            self.messages[host] = failure_message(res)
            self.seen[host] = HostStatus.UNREACHABLE if kind == "runner_on_unreachable" else HostStatus.FAILED

    def host_results(self) -> tuple[HostResult, ...]:
        out = []
        for host in self.hosts:
            status = (self.stats or {}).get(host, HostStatus.PENDING)
            if status is HostStatus.PENDING:
                status = self.seen.get(host, HostStatus.PENDING)  # no stats: the run was stopped
            message = self.messages.get(host) if not status.succeeded else None
            out.append(HostResult(host, status, self.results.get(host), message))
        return tuple(out)


def run_status(runner_status: str, rc: int | None, timeout_s: int) -> tuple[RunStatus, str | None]:
    """ansible-runner's final status as ours, with the run's error when it failed as a whole."""
    if runner_status == "successful":
        return RunStatus.SUCCEEDED, None
    if runner_status == "canceled":
        return RunStatus.CANCELLED, None
    if runner_status == "timeout":
        return RunStatus.FAILED, f"the run was stopped after the timeout of {timeout_s}s"
    if rc == 2:
        return RunStatus.FAILED, "a host failed (rc 2)"
    if rc == 4:
        return RunStatus.FAILED, "a host was unreachable (rc 4)"
    return RunStatus.FAILED, f"ansible-playbook ended with status {runner_status} (rc {rc})"


def _ansible_runner() -> Any:
    """The ansible_runner module, imported when first needed: it is an optional dependency."""
    try:
        import ansible_runner  # type: ignore[import-untyped]
    except ImportError as exc:
        raise Unavailable(INSTALL_HINT) from exc
    return ansible_runner


# -- the runner -----------------------------------------------------------------------------------------------
class PlaybookRunner:
    """Runs PlaybookJobs with ansible-runner; thread-safe (one call per worker thread)."""

    def __init__(self, settings: AnsibleSettings, runs_dir: Path, clock: Callable[[], datetime]) -> None:
        self._settings = settings
        self._runs_dir = runs_dir
        self._clock = clock
        self._active: set[str] = set()
        self._lock = threading.Lock()

    def declared_vars(self) -> dict[PlaybookName, dict[str, VarSpec]]:
        """The extra vars each playbook takes from the API, from `api_vars.yml` in the playbooks directory
        (none without that file). Raises DeclarationError when the file is malformed: a configuration mistake."""
        path = self._settings.playbooks_dir / DECLARATIONS_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            log.warning("%s is missing: playbook runs take no extra vars from the API", path)
            return {}
        except OSError as exc:
            raise DeclarationError(f"{path}: {exc}") from exc
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DeclarationError(f"{path}: not YAML: {exc}") from exc
        return parse_declarations(document, str(path))

    def check_available(self) -> None:
        """Raise Unavailable (naming the install command) when ansible-runner is missing."""
        _ansible_runner()

    def playbook_path(self, file_name: str) -> Path:
        root = self._settings.playbooks_dir.resolve()
        path = (root / file_name).resolve()
        if path.parent != root:
            raise Unavailable(f"playbook {file_name} is outside {root}")
        if not path.is_file():
            raise Unavailable(f"playbook {file_name} is not in {root}")
        return path

    def run(self, job: PlaybookJob, on_event: EventCallback, cancelled: CancelCheck) -> PlaybookOutcome:
        """Run the job to its end (or until `cancelled()` holds); never raises for what the playbook did."""
        ansible_runner = _ansible_runner()
        playbook = self.playbook_path(job.playbook.file_name)
        run_dir = self._runs_dir / job.run_id
        collector = HostCollector(list(job.hosts))
        with self._lock:
            self._active.add(job.run_id)
        try:
            inventory = self._prepare(run_dir, job)

            def handle(event: dict[str, Any]) -> bool:
                try:
                    collector.feed(event)
                    translated = translate_event(job.run_id, event, self._clock())
                    if translated is not None:
                        on_event(translated)
                except Exception:  # a bad event (or listener) must not stop the run
                    log.exception("dropped an event of playbook run %s", job.run_id)
                return True

            try:
                runner = ansible_runner.run(
                    private_data_dir=str(run_dir),
                    host_cwd=str(playbook.parent),
                    playbook=str(playbook),
                    inventory=str(inventory),
                    envvars=self._envvars(run_dir),
                    forks=self._settings.forks,
                    timeout=self._settings.timeout_s,
                    settings={"pexpect_timeout": _POLL_S, "suppress_ansible_output": True},
                    ident="run",
                    quiet=True,
                    event_handler=handle,
                    cancel_callback=cancelled,
                )
            except ansible_runner.AnsibleRunnerException as exc:
                raise Unavailable(f"ansible-runner failed: {exc}") from exc
            status, error = run_status(str(runner.status), runner.rc, self._settings.timeout_s)
            return PlaybookOutcome(status, collector.host_results(), runner.rc, error)
        finally:
            (run_dir / "env" / "extravars").unlink(missing_ok=True)  # the real values: gone with the run
            with self._lock:
                self._active.discard(job.run_id)
            self.rotate()

    def _prepare(self, run_dir: Path, job: PlaybookJob) -> Path:
        """The run's inventory (host vars `!unsafe`, the operator's common vars as they are) and, when there are
        extra vars, `env/extravars` (all `!unsafe`, mode 0600), which ansible-runner passes as `-e @file`."""
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_dir.chmod(0o700)
        for sub in ("inventory", "env", "tmp"):
            (run_dir / sub).mkdir(mode=0o700, exist_ok=True)
        inventory = run_dir / "inventory" / "hosts.yml"
        hosts = {host: unsafe_vars(variables) for host, variables in job.hosts.items()}
        write_private(inventory, unsafe_yaml(build_inventory(hosts, self._settings.vars)))  # may carry credentials
        if job.extra_vars:
            write_private(run_dir / "env" / "extravars", unsafe_yaml(unsafe_vars(job.extra_vars)))
        return inventory

    def _envvars(self, run_dir: Path) -> dict[str, str]:
        # ansible-playbook is found next to this interpreter (the virtualenv the control plane runs in).
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {
            "PATH": path,
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_INVENTORY_ENABLED": "yaml",  # our inventory file, whatever ansible.cfg enables
            "ANSIBLE_LOCAL_TEMP": str(run_dir / "tmp"),
        }
        if self._settings.ssh_args:
            env["ANSIBLE_SSH_ARGS"] = self._settings.ssh_args
        if self._settings.private_key_file is not None:
            env["ANSIBLE_PRIVATE_KEY_FILE"] = str(self._settings.private_key_file)
        return env

    def rotate(self) -> None:
        """Keep only the newest `keep_runs` run directories (never one of a run still going)."""
        if not self._runs_dir.is_dir():
            return
        with self._lock:
            active = set(self._active)
        dirs = sorted(
            (d for d in self._runs_dir.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True
        )
        for old in dirs[self._settings.keep_runs :]:
            if old.name not in active:
                shutil.rmtree(old, ignore_errors=True)
