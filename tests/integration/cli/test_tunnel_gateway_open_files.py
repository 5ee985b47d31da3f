"""The tunnel gateway holds two descriptors per connected device (its SSH connection and its service's socket).
Started under a soft open-files limit lower than that (systemd's default soft limit is 1,024: about 500 devices),
it raises its own to the hard limit and keeps answering, where it used to fail every accept in a loop.

Checked on the real `edgectl tunnel-gateway` process: every one of more connections than the soft limit it was
started with gets the gateway's SSH greeting, and its log has no "Too many open files".
"""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import EDGECTL, free_port, python_env, wait_for

pytestmark = pytest.mark.integration

SOFT = 64
CONNECTIONS = 100


def greeting(sock: socket.socket, deadline: float) -> bytes:
    """The first bytes the gateway sends on `sock` (an SSH server speaks first), or b"" by `deadline`."""
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        return sock.recv(64)
    except TimeoutError:
        return b""


def test_the_gateway_answers_more_devices_than_the_soft_limit_it_was_started_with(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * CONNECTIONS:
        pytest.skip(f"the hard open-files limit here ({hard}) leaves no room above the {SOFT} this test starts with")
    port, log = free_port(), tmp_path / "gateway.log"
    argv = [EDGECTL, "tunnel-gateway", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=python_env(),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, hard)),
        )
    try:
        wait_for(lambda: process.poll() is None and "tunnel gateway listening" in log.read_text(), 60, "the gateway")
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CONNECTIONS)]
        try:
            # before the gateway's 10 s login timeout closes the first ones and frees their descriptors
            deadline = time.monotonic() + 8
            answered = sum(greeting(sock, deadline).startswith(b"SSH-2.0-") for sock in sockets)
        finally:
            for sock in sockets:
                sock.close()
        assert answered == CONNECTIONS, f"{answered} of {CONNECTIONS} connections got the gateway's greeting"
        assert "Too many open files" not in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
