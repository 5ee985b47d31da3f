"""Load the control plane's ed25519 signing key from its file, creating it (mode 0600) on first start.

It never logs or returns the private key material; only the Signer leaves this module.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.protocol import Signer


def load_or_create_signer(path: Path) -> Signer:
    if path.exists():
        return Signer.from_pem(path.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    signer = Signer.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(signer.to_pem())
    return signer
