"""Views of builds and builders: the build queue, one build's parity and latency report and signed manifest, the
one-line progress of a build (`edgectl build --wait`, the demo), registered builders and this host as a builder.

Pure functions from JSON data (docs/api.md) to renderables or text: no I/O, no client calls.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from control_plane.cli.views.cells import cell, record, short, status_text, table

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
