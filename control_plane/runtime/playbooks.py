"""Playbook runs through ansible-runner: the runner over `ansible.playbooks_dir`, the run service, and what a
restart does to the runs it interrupted.

Values handed to a playbook are data (playbooks/api_vars.yml declares them); nothing here builds a template.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable
from datetime import datetime, timedelta

from control_plane.adapters.playbook_runner import PlaybookRunner
from control_plane.domain.tunnels import service_socket
from control_plane.runtime.storage import Storage
from control_plane.services.ansible_push import AnsiblePush
from control_plane.services.fleet import FleetService
from control_plane.services.identity import IdentityService
from control_plane.services.playbook_runs import PlaybookRunService
from control_plane.settings import AnsibleSettings, ServerSettings

log = logging.getLogger(__name__)


def wire_playbook_runs(
    settings: ServerSettings,
    storage: Storage,
    fleet: FleetService,
    identity: IdentityService,
    clock: Callable[[], datetime],
) -> PlaybookRunService:
    runner = PlaybookRunner(
        ansible_settings(settings, storage.signer.public_key_b64), settings.playbook_runs_dir, clock
    )
    return PlaybookRunService(
        storage.repos.playbook_runs,
        storage.repos.fleet,
        runner,
        clock,
        fleet.accept_report,
        settings.ansible.workers,
        declared_vars=runner.declared_vars(),  # playbooks/api_vars.yml: what a request may set
        run_tokens=identity,  # provision enrolls and decommission forgets with a token of the run's own
        run_token_lifetime=timedelta(seconds=settings.ansible.timeout_s + 300),
        tunnel_proxy=lambda device_id: tunnel_proxy_command(settings, device_id),
    )


def tunnel_proxy_command(settings: ServerSettings, device_id: str) -> str:
    """The ProxyCommand of a device enrolled with `connection: tunnel`: a pipe to the tunnel gateway's socket for
    its `ssh` service (this host: the gateway shares the data dir). The run's ssh runs it as this user, who alone
    may open the socket (0600 in a 0700 directory)."""
    socket = service_socket(settings.tunnel_run_dir, device_id, "ssh")
    return shlex.join([sys.executable, "-m", "control_plane.adapters.socket_pipe", str(socket)])


def recover_playbook_runs(playbook_runs: PlaybookRunService, push: AnsiblePush) -> None:
    """Runs a restart interrupted are failed, and the pushes they carried told so."""
    interrupted = playbook_runs.recover()
    if interrupted:
        log.warning("marked %d playbook run(s) failed: %s", len(interrupted), "control plane restarted during the run")
    push.recover(interrupted)


def ansible_settings(settings: ServerSettings, public_key_b64: str) -> AnsibleSettings:
    """Every playbook run knows where the control plane is and which key it signs with (provision.yml writes the
    key into agent.yaml); `ansible.vars` may override both."""
    defaults = {"edge_control_plane_url": settings.base_url, "edge_control_plane_public_key": public_key_b64}
    return settings.ansible.model_copy(update={"vars": defaults | settings.ansible.vars})
