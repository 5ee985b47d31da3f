"""Load the control plane's ed25519 signing key from its file, creating it (mode 0600) on first start.

It never logs or returns the private key material; only the Signer leaves this module.
"""

from __future__ import annotations

from pathlib import Path

from control_plane.adapters.private_files import write_private
from edge_agent.protocol import Signer


def load_or_create_signer(path: Path) -> Signer:
    if path.exists():
        return Signer.from_pem(path.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    signer = Signer.generate()
    write_private(path, signer.to_pem())
    return signer
