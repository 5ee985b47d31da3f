"""Views of the control plane's jobs: training jobs (with their log tail) and playbook runs (per host results).

Pure functions from JSON data (docs/api.md) to renderables: no I/O, no client calls.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from control_plane.cli.views.cells import cell, record, status_text, table


def training_jobs_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(j.get("id")),
            cell((j.get("spec") or {}).get("name")),
            status_text(j.get("status")),
            cell(j.get("model")),
            cell(j.get("version")),
            cell(j.get("created_at")),
            cell(j.get("error")),
        ]
        for j in data
    ]
    return table("training jobs", ["id", "name", "status", "model", "version", "created", "error"], rows)


def training_job_view(data: Any) -> RenderableType:
    head = record(
        f"training job {data.get('id')}",
        data,
        ["id", "status", "model", "version", "created_at", "finished_at", "error"],
    )
    spec = record("spec", data.get("spec") or {})
    logs = Text(str(data.get("logs_tail") or "(no output yet)"))
    return Group(head, spec, Text("logs (tail):", style="bold"), logs)


def playbook_runs_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(r.get("id")),
            cell(r.get("playbook")),
            status_text(r.get("status")),
            cell(len(r.get("hosts") or [])),
            cell(r.get("purpose")),
            cell(r.get("created_at")),
            cell(r.get("error")),
        ]
        for r in data
    ]
    return table(
        "playbook runs (newest first)", ["id", "playbook", "status", "hosts", "purpose", "created", "error"], rows
    )


def playbook_run_view(data: Any) -> RenderableType:
    main = record(
        f"playbook run {data.get('id')}",
        data,
        ["id", "playbook", "status", "purpose", "selector", "extra_vars", "created_at", "started_at", "finished_at",
         "rc", "error"],
    )  # fmt: skip
    rows: list[list[RenderableType]] = [
        [cell(h.get("host")), status_text(h.get("status")), cell(h.get("message")), cell(_result_summary(h))]
        for h in data.get("hosts") or []
    ]
    return Group(main, table("hosts", ["host", "status", "message", "result"], rows))


def _result_summary(host: dict[str, Any]) -> str | None:
    result = host.get("result")
    if not isinstance(result, dict):
        return None
    parts = [f"{k}={result[k]}" for k in ("ok", "changed", "generation", "reason") if k in result]
    if "reported" in result:
        parts.append("reported state")
    if "hardware" in result:
        parts.append("hardware facts")
    return ", ".join(parts) or None
