"""What `edgectl` prints for people: rich renderings of the REST answers of docs/api.md, one module per duty.

`cells` has the pieces every view is made of; `registry`, `builds`, `fleet`, `jobs` and `access` render the answers
of their part of the API. Commands use the views through this package (`views.device_view`), so where a view lives
is this package's business. Everything here is a pure function from JSON data to a renderable: no I/O, no client
calls, and a field the server leaves out shows as "-" rather than failing.
"""

from __future__ import annotations

from control_plane.cli.views.access import (
    audit_verify_view,
    audit_view,
    broker_credential_view,
    broker_view,
    enrollment_token_created_view,
    enrollment_token_view,
    enrollment_tokens_view,
    enrollment_view,
    enrollments_view,
    reconcile_view,
    revocation_view,
    token_created_view,
    token_view,
    tokens_view,
    whoami_view,
)
from control_plane.cli.views.builds import (
    FINISHED_BUILD,
    build_line,
    build_view,
    builder_registered_view,
    builders_view,
    builds_created_view,
    builds_view,
    doctor_view,
    latency_summary,
    parity_summary,
)
from control_plane.cli.views.cells import STATUS_STYLES, cell, record, short, status_text, table
from control_plane.cli.views.fleet import (
    counts_text,
    device_view,
    devices_view,
    events_view,
    label_keys_view,
    rollout_view,
    rollouts_view,
)
from control_plane.cli.views.jobs import playbook_run_view, playbook_runs_view, training_job_view, training_jobs_view
from control_plane.cli.views.registry import (
    health_view,
    key_view,
    model_view,
    models_view,
    targets_view,
    version_view,
    versions_view,
)
from control_plane.cli.views.tunnels import tunnel_session_view, tunnel_sessions_view
from control_plane.cli.views.wide import WIDE_VIEWS, builds_wide_view, devices_wide_view, rollouts_wide_view

__all__ = [
    "FINISHED_BUILD",
    "STATUS_STYLES",
    "WIDE_VIEWS",
    "audit_verify_view",
    "audit_view",
    "broker_credential_view",
    "broker_view",
    "build_line",
    "build_view",
    "builder_registered_view",
    "builders_view",
    "builds_created_view",
    "builds_view",
    "builds_wide_view",
    "cell",
    "counts_text",
    "device_view",
    "devices_view",
    "devices_wide_view",
    "doctor_view",
    "enrollment_token_created_view",
    "enrollment_token_view",
    "enrollment_tokens_view",
    "enrollment_view",
    "enrollments_view",
    "events_view",
    "health_view",
    "key_view",
    "label_keys_view",
    "latency_summary",
    "model_view",
    "models_view",
    "parity_summary",
    "playbook_run_view",
    "playbook_runs_view",
    "reconcile_view",
    "record",
    "revocation_view",
    "rollout_view",
    "rollouts_view",
    "rollouts_wide_view",
    "short",
    "status_text",
    "table",
    "targets_view",
    "token_created_view",
    "token_view",
    "tokens_view",
    "training_job_view",
    "training_jobs_view",
    "tunnel_session_view",
    "tunnel_sessions_view",
    "version_view",
    "versions_view",
    "whoami_view",
]
