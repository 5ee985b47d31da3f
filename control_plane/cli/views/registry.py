"""Views of the control plane itself and its registry: health, signing key, GPU classes, models and versions.

Pure functions from JSON data (docs/api.md) to renderables: no I/O, no client calls.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType

from control_plane.cli.views.cells import cell, record, short, table


def health_view(data: Any) -> RenderableType:
    """GET /v1/status (or /healthz): the health record, then the ingest queue's counters when present."""
    ingest = data.get("ingest") if isinstance(data, dict) else None
    health = record("control plane", {k: v for k, v in data.items() if k != "ingest"} if ingest else data)
    if not isinstance(ingest, dict):
        return health
    return Group(health, record("ingest queue", ingest))


def key_view(data: Any) -> RenderableType:
    return record("signing key (pin public_key in agent.yaml)", data)


def targets_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = []
    for t in data:
        caps = t.get("compute_capabilities")
        runtime = t.get("runtime") or t.get("providers")
        kinds, precisions = cell(t.get("kinds")), cell(t.get("precisions"))
        rows.append([cell(t.get("name")), cell(t.get("arch")), cell(caps), kinds, precisions, cell(runtime)])
    columns = ["name", "arch", "compute capabilities", "kinds", "precisions", "runtime"]
    return table("GPU classes (edgectl build NAME VERSION -t CLASS -k KIND)", columns, rows)


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
