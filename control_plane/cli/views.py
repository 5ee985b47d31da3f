"""Rich renderings of the REST schemas of docs/api.md (ModelOut, VersionOut, BuildOut, DeviceOut, ...).

Pure functions from JSON data to renderables: no I/O, no client calls. A field the server leaves out shows as "-"
rather than failing, so an older or newer server still renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "succeeded": "green",
    "activated": "green",
    "online": "green",
    "ok": "green",
    "serving": "green",
    "failed": "red",
    "rejected": "red",
    "offline": "red",
    "in_progress": "yellow",
    "running": "yellow",
    "pending": "dim",
    "queued": "dim",
    "waiting_for_builder": "yellow",
    "unknown": "dim",
    "changed": "yellow",
    "unreachable": "red",
    "cancelled": "red",
    "skipped": "dim",
    "refused": "red",
}


def cell(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def status_text(value: Any) -> Text:
    text = cell(value)
    return Text(text, style=STATUS_STYLES.get(text, ""))


def short(value: Any, length: int = 12) -> str:
    text = cell(value)
    return text if len(text) <= length else text[:length] + "…"


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[RenderableType]]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")  # wrap ids and digests, never cut them with an ellipsis
    for row in rows:
        out.add_row(*row)
    return out


def record(title: str, data: dict[str, Any], fields: Sequence[str] | None = None) -> Table:
    """A two-column key/value table for one object."""
    out = Table(title=title, title_justify="left", show_header=False)
    out.add_column("field", style="bold", no_wrap=True)
    out.add_column("value", overflow="fold")
    for key in fields or list(data):
        value = data.get(key)
        out.add_row(key, status_text(value) if key in ("status", "phase", "presence") else cell(value))
    return out


def health_view(data: Any) -> RenderableType:
    return record("control plane", data)


def key_view(data: Any) -> RenderableType:
    return record("signing key (pin public_key in agent.yaml)", data)


def targets_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = []
    for t in data:
        caps = t.get("compute_capabilities")
        runtime = t.get("runtime") or t.get("providers")
        rows.append([cell(t.get("name")), cell(t.get("arch")), cell(caps), cell(t.get("precisions")), cell(runtime)])
    return table("GPU classes", ["name", "arch", "compute capabilities", "precisions", "runtime"], rows)


def models_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [cell(m.get("name")), cell(m.get("latest_version")), cell(m.get("version_count")), cell(m.get("created_at"))]
        for m in data
    ]
    return table("models", ["name", "latest version", "versions", "created"], rows)


def model_view(data: Any) -> RenderableType:
    return record(f"model {data.get('name')}", data)


def _io(specs: Any) -> str:
    return "; ".join(f"{s.get('name')} {s.get('dtype')} {s.get('shape')}" for s in specs or []) or "-"


def versions_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(v.get("version")),
            short(v.get("source_sha256")),
            cell(v.get("source_size")),
            _io(v.get("inputs")),
            cell(v.get("sample_count")),
            cell((v.get("lineage") or {}).get("source")),
            cell(v.get("created_at")),
        ]
        for v in data
    ]
    return table("versions", ["version", "sha256", "bytes", "inputs", "samples", "source", "created"], rows)


def version_view(data: Any) -> RenderableType:
    main = record(
        f"{data.get('model')} v{data.get('version')}",
        {
            **data,
            "inputs": _io(data.get("inputs")),
            "outputs": _io(data.get("outputs")),
        },
        [
            "model",
            "version",
            "created_at",
            "source_sha256",
            "source_size",
            "inputs",
            "outputs",
            "samples_sha256",
            "sample_count",
            "reference_outputs_computed",
            "metrics",
        ],
    )
    lineage = record("lineage", data.get("lineage") or {})
    return Group(main, lineage)


FINISHED_BUILD = ("succeeded", "rejected", "failed", "cancelled")


def parity_summary(parity: Any) -> str:
    """One line of a parity report: the worst figures over the outputs."""
    outputs = (parity or {}).get("outputs") or []
    if not outputs:
        return "-"
    worst_abs = max(float(o.get("max_abs", 0.0)) for o in outputs)
    worst_cos = min(float(o.get("cosine", 1.0)) for o in outputs)
    top1 = [o["top1_agreement"] for o in outputs if o.get("top1_agreement") is not None]
    text = f"max abs {worst_abs:.3g}, cosine {worst_cos:.6f}"
    return text + (f", top-1 {min(top1):.3f}" if top1 else "")


def latency_summary(latency: Any) -> str:
    batches = (latency or {}).get("batches") or []
    parts = [f"b{b.get('batch')} p50 {b.get('p50_ms', 0):.3g} ms p99 {b.get('p99_ms', 0):.3g} ms" for b in batches]
    return "; ".join(parts) + (f" ({latency.get('provider')})" if parts and latency.get("provider") else "") or "-"


def build_line(b: dict[str, Any]) -> str:
    """What a build is doing now, in one line (edgectl build --wait, the demo)."""
    status = b.get("status")
    what = f"{b.get('target')} {b.get('kind') or b.get('artifact_kind')} {b.get('precision')}"
    if status == "waiting_for_builder":
        return f"{what}: waiting for {b.get('waiting_for')}"
    if status == "running":
        progress = b.get("progress")
        pct = f" {progress * 100:.0f}%" if isinstance(progress, int | float) else ""
        return f"{what}: running{pct} {b.get('message') or ''}".rstrip()
    if status == "succeeded":
        return f"{what}: succeeded (parity {parity_summary(b.get('parity'))})"
    if status in ("rejected", "failed"):
        return f"{what}: {status}: {b.get('error') or 'no reason given'}"
    if status == "cancelled":
        return f"{what}: {b.get('message') or 'cancelled'}"
    return f"{what}: {status}"


def builds_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(b.get("id")),
            cell(b.get("target")),
            cell(b.get("kind") or b.get("artifact_kind")),
            cell(b.get("precision")),
            cell(b.get("compute_capability")),
            status_text(b.get("status")),
            cell(parity_summary(b.get("parity")) if b.get("parity") else b.get("waiting_for") or b.get("message")),
            short(b.get("artifact_sha256")),
            cell(b.get("error")),
        ]
        for b in data
    ]
    cols = ["id", "target", "kind", "precision", "cc", "status", "parity / state", "artifact", "error"]
    return table("builds", cols, rows)


def builds_created_view(data: Any) -> RenderableType:
    parts: list[RenderableType] = [builds_view(data.get("builds") or [])]
    skipped = data.get("skipped") or []
    if skipped:
        rows: list[list[RenderableType]] = [
            [cell(s.get("target")), cell(s.get("kind")), cell(s.get("precision")), cell(s.get("reason"))]
            for s in skipped
        ]
        parts.append(table("skipped", ["target", "kind", "precision", "reason"], rows))
    return Group(*parts)


def _parity_table(parity: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [cell(o.get("name")), cell(o.get("max_abs")), cell(o.get("max_rel")), cell(o.get("cosine")),
         cell(o.get("top1_agreement"))]
        for o in (parity or {}).get("outputs") or []
    ]  # fmt: skip
    verdict = "passed" if (parity or {}).get("passed") else "failed"
    title = f"parity ({verdict}; tolerances {cell((parity or {}).get('tolerances'))})"
    out = table(title, ["output", "max abs", "max rel", "cosine", "top-1"], rows)
    return Group(out, *[Text(f"  {r}", style="red") for r in (parity or {}).get("reasons") or []])


def _latency_table(latency: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [cell(b.get("batch")), cell(b.get("runs")), cell(b.get("p50_ms")), cell(b.get("p99_ms"))]
        for b in (latency or {}).get("batches") or []
    ]
    return table(f"latency ({cell((latency or {}).get('provider'))})", ["batch", "runs", "p50 ms", "p99 ms"], rows)


def build_view(data: Any) -> RenderableType:
    hidden = ("manifest", "parity", "latency")
    parts: list[RenderableType] = [
        record(f"build {data.get('id')}", {k: v for k, v in data.items() if k not in hidden})
    ]
    if data.get("parity"):
        parts.append(_parity_table(data.get("parity")))
    if data.get("latency"):
        parts.append(_latency_table(data.get("latency")))
    manifest = {k: v for k, v in (data.get("manifest") or {}).items() if k not in ("parity", "latency")}
    parts += [Text("manifest (signed):", style="bold"), record("", manifest)]
    return Group(*parts)


def builders_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(b.get("builder_id")),
            cell(b.get("hostname")),
            cell(b.get("kinds")),
            cell(b.get("gpu_class")),
            cell(b.get("compute_capability")),
            cell(b.get("tensorrt_version")),
            cell(b.get("last_seen")),
        ]
        for b in data
    ]
    cols = ["builder", "host", "kinds", "gpu class", "cc", "TensorRT", "last seen"]
    return table("builders seen recently", cols, rows)


def builder_registered_view(data: Any) -> RenderableType:
    fields = ["name", "subject", "compute_capability", "tensorrt", "gpu_class", "token_id"]
    shown = record("builder registered", data, fields)
    hint = Text("builder token (shown once; give it to the builder: EDGECTL_TOKEN or --token): ", style="bold")
    return Group(shown, hint + Text(cell(data.get("token"))))


def doctor_view(data: Any) -> RenderableType:
    head = record(
        "this host as a builder",
        {
            "builds": data.get("kinds"),
            "gpu": data.get("gpu_name") or "no NVIDIA GPU detected",
            "gpu_class": data.get("gpu_class"),
            "compute_capability": data.get("compute_capability"),
            "tensorrt": data.get("tensorrt_version") or "not available",
            "onnxruntime": data.get("onnxruntime_version"),
            "providers": data.get("onnxruntime_providers"),
        },
    )
    reasons = [Text(f"  {r}", style="yellow") for r in data.get("reasons") or []]
    return Group(head, Text("cannot build:", style="bold"), *reasons) if reasons else head


def _serving(device: dict[str, Any]) -> str:
    models = (device.get("reported") or {}).get("models") or []
    return (
        ", ".join(
            f"{m.get('name')} v{m.get('version')} {m.get('artifact_kind') or 'onnx'} ({m.get('provider')})"
            for m in models
        )
        or "-"
    )


def _fallbacks(device: dict[str, Any]) -> str | None:
    models = (device.get("reported") or {}).get("models") or []
    reasons = [f"{m.get('name')}: {m['fallback_reason']}" for m in models if m.get("fallback_reason")]
    return "; ".join(reasons) or None


def devices_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(d.get("id")),
            status_text(d.get("presence")),
            cell(d.get("gpu_class")),
            cell(d.get("labels")),
            _serving(d),
            cell(d.get("last_seen")),
        ]
        for d in data
    ]
    return table("devices", ["id", "presence", "gpu class", "labels", "serving", "last seen"], rows)


def device_view(data: Any) -> RenderableType:
    main = record(
        f"device {data.get('id')}",
        {**data, "serving": _serving(data), "fell back": _fallbacks(data)},
        ["id", "presence", "last_seen", "channel", "gpu_class", "labels", "serving", "fell back", "desired_generation"],
    )
    parts: list[RenderableType] = [main, record("hardware", data.get("hardware") or {})]
    if data.get("ansible"):
        parts.append(record("ansible connection", data["ansible"]))
    if data.get("delivery_failure"):
        parts.append(record("last failed delivery", data["delivery_failure"]))
    reported = data.get("reported")
    if reported:
        parts.append(record("reported", {k: v for k, v in reported.items() if k not in ("hardware", "models")}))
    return Group(*parts)


def events_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(e.get("at")),
            cell(e.get("source")),
            cell(e.get("generation")),
            status_text(e.get("step")),
            cell(e.get("model")),
            cell(e.get("version")),
            cell(e.get("reason")),
        ]
        for e in data
    ]
    columns = ["at", "from", "generation", "step", "model", "version", "reason"]
    return table("events (newest first)", columns, rows)


def rollouts_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(r.get("id")),
            cell(r.get("model")),
            cell(r.get("version")),
            status_text(r.get("phase")),
            counts_text(r.get("counts") or {}),
            cell(r.get("created_at")),
        ]
        for r in data
    ]
    return table("rollouts", ["id", "model", "version", "phase", "devices", "created"], rows)


def counts_text(counts: dict[str, Any]) -> str:
    order = ("activated", "in_progress", "pending", "failed")
    return " ".join(f"{k}={counts.get(k, 0)}" for k in order)


def rollout_view(data: Any) -> RenderableType:
    head = record(
        f"rollout {data.get('id')}",
        {**data, "counts": counts_text(data.get("counts") or {})},
        ["id", "model", "version", "selector", "strategy", "phase", "counts", "created_at", "updated_at"],
    )
    rows: list[list[RenderableType]] = [
        [
            cell(d.get("device_id")),
            cell(d.get("target")),
            status_text(d.get("status")),
            cell(d.get("generation")),
            cell(d.get("reason")),
            cell(d.get("updated_at")),
        ]
        for d in data.get("devices") or []
    ]
    return Group(head, table("devices", ["device", "target", "status", "generation", "reason", "updated"], rows))


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


def whoami_view(data: Any) -> RenderableType:
    return record("who am I", data, ["name", "role", "subject", "device_id", "permissions"])


def tokens_view(data: Any) -> RenderableType:
    columns = ["id", "name", "role", "device", "created", "by", "expires", "revoked", "last used"]
    keys = ["id", "name", "role", "device_id", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at"]
    return table("tokens", columns, ([cell(t.get(k)) for k in keys] for t in data))


def token_created_view(data: Any) -> RenderableType:
    shown = record("token created", data, ["id", "name", "role", "device_id", "expires_at"])
    return Group(shown, Text("token (shown once, store it now): ", style="bold") + Text(cell(data.get("token"))))


def broker_credential_view(data: Any) -> RenderableType:
    shown = record("broker credentials", data, ["device_id", "username", "client_id"])
    password = Text("password (shown once, put it in the agent's mqtt.password now): ", style="bold")
    return Group(shown, password + Text(cell(data.get("password"))))


def revocation_view(data: Any) -> RenderableType:
    broker = {"dynsec": "client deleted, disconnected", "none": "not administered here: not told"}
    shown = dict(data) | {"broker": broker.get(str(data.get("broker")), data.get("broker"))}
    return record(f"revoked {data.get('device_id')}", shown, ["broker", "tokens_revoked"])


def broker_view(data: Any) -> RenderableType:
    last = data.get("last_reconcile") or {}
    shown = {
        "admin": data.get("admin"),
        "last reconcile": data.get("last_reconcile_at"),
        "last error": data.get("last_error"),
    }
    return Group(record("broker accounts", shown), reconcile_view(last) if last else Text(""))


def reconcile_view(data: Any) -> RenderableType:
    if not data.get("administered", True):
        return Text("the broker is not administered by this control plane (mqtt.admin: none): nothing to reconcile")
    return record("reconcile", data)


def token_view(data: Any) -> RenderableType:
    return record("token", data)


_ENROLLMENT_TOKEN_KEYS = ["id", "name", "auto_approve", "labels", "channel", "gpu_class", "uses", "max_uses"]


def enrollment_tokens_view(data: Any) -> RenderableType:
    columns = ["id", "name", "auto-approve", "labels", "channel", "gpu class", "uses", "max", "expires", "revoked"]
    keys = [*_ENROLLMENT_TOKEN_KEYS, "expires_at", "revoked_at"]
    return table("enrollment tokens", columns, ([cell(t.get(k)) for k in keys] for t in data))


def enrollment_token_created_view(data: Any) -> RenderableType:
    shown = record("enrollment token created", data, [*_ENROLLMENT_TOKEN_KEYS, "expires_at"])
    secret = Text("token (shown once; give it to `edge-agent enroll --token`): ", style="bold")
    return Group(shown, secret + Text(cell(data.get("token"))))


def enrollment_token_view(data: Any) -> RenderableType:
    return record("enrollment token", data)


def enrollments_view(data: Any) -> RenderableType:
    columns = ["device", "status", "key", "requested key", "requested", "with token", "gpu class", "decided by"]
    keys = ["device_id", "status", "key", "requested_key", "requested_at", "requested_with", "gpu_class", "decided_by"]
    rows: list[list[RenderableType]] = [
        [status_text(e.get(k)) if k == "status" else cell(e.get(k)) for k in keys] for e in data
    ]
    return table("enrollments", columns, rows)


def enrollment_view(data: Any) -> RenderableType:
    return record(f"enrollment of {data.get('device_id')}", data)


def audit_view(data: Any) -> RenderableType:
    columns = ["seq", "at", "who", "role", "method", "path", "status", "outcome", "request id"]
    return table(
        "audit log",
        columns,
        (
            [
                cell(r.get("seq")),
                cell(r.get("at")),
                cell(r.get("name") or r.get("subject")),
                cell(r.get("role")),
                cell(r.get("method")),
                cell(r.get("path")),
                cell(r.get("status")),
                status_text(r.get("outcome")),
                cell(r.get("request_id")),
            ]
            for r in data
        ),
    )


def audit_verify_view(data: Any) -> RenderableType:
    if data.get("intact"):
        head = f" (last: seq {data.get('last_seq')}, hash {data.get('last_hash')})" if data.get("last_seq") else ""
        return Text(f"{data.get('records')} records, chain intact{head}", style="green")
    return Text(
        f"chain broken at seq {data.get('broken_seq')}: that record was changed, or one before it was removed or "
        f"moved ({data.get('records')} records checked before it)",
        style="bold red",
    )
