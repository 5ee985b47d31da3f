"""`python -m control_plane.adapters.socket_pipe SOCKET`: stdin/stdout to a unix socket, for an SSH ProxyCommand.

The control plane's own playbook runs reach a device enrolled with `ansible.connection: tunnel` through the tunnel
gateway's socket for the device's `ssh` service (`DATA_DIR/tunnels/DEVICE.ssh.sock`, on the same host, mode 0600):
ansible's ssh runs this as its ProxyCommand (docs/tunnels.md, "Ansible through the tunnel"). It copies bytes both
ways until either side closes and says why it could not connect; it decides nothing and reads nothing else.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

CHUNK = 64 * 1024


def pipe(path: str) -> int:
    """Copy stdin to the socket and the socket to stdout until the socket closes; the process's exit code."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        print(f"no tunnel to this device's ssh service ({path}: {exc.strerror or exc})", file=sys.stderr)
        return 255  # what ssh itself exits with when it cannot connect
    threading.Thread(target=_to_socket, args=(sock,), daemon=True).start()
    stdout = sys.stdout.fileno()
    while data := _receive(sock):
        view = memoryview(data)
        while view:
            view = view[os.write(stdout, view) :]
    return 0


def _to_socket(sock: socket.socket) -> None:
    stdin = sys.stdin.fileno()
    with contextlib.suppress(OSError):
        while data := os.read(stdin, CHUNK):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(CHUNK)
    except OSError:
        return b""


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m control_plane.adapters.socket_pipe SOCKET", file=sys.stderr)
        sys.exit(2)
    sys.exit(pipe(sys.argv[1]))
