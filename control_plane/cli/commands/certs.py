"""`edgectl certs ca|issue`: the control plane's CA on this host (its data dir): show it, and issue a server
certificate from it for the MQTT broker (or a proxy in front of the API), so every TLS peer chains to one CA.

These read the data dir directly (run them where the control plane runs); they never print a private key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from control_plane.adapters.pki import CertificateAuthority, ca_fingerprint
from control_plane.cli.client import CliError
from control_plane.cli.state import state_of

certs_app = typer.Typer(help="The control plane's certificate authority (TLS for the API and the broker).")

DataDir = Annotated[Path, typer.Option("--data-dir", help="The control plane's data dir (EDGE_CP_DATA_DIR).")]


def _ca(data_dir: Path, create: bool) -> CertificateAuthority:
    ca = CertificateAuthority(data_dir / "pki")
    if create:
        ca.ensure(datetime.now(UTC))
    elif not ca.cert_file.exists():
        raise CliError(f"no CA under {data_dir}/pki: start the server once with tls.enabled, or run `certs issue`")
    return ca


@certs_app.command("ca")
def show_ca(ctx: typer.Context, data_dir: DataDir = Path(".edge-cp")) -> None:
    """Where the CA certificate is and its sha256 (what agents and edgectl pin: --ca-file, control_plane_ca_file)."""
    ca = _ca(data_dir, create=False)
    state_of(ctx).output.emit(
        {"ca_file": str(ca.cert_file), "sha256": ca_fingerprint(ca.pem)},
        lambda d: f"CA certificate: {d['ca_file']}\nsha256: {d['sha256']}",
    )


@certs_app.command("issue")
def issue(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="File stem of the certificate, e.g. broker.")],
    host: Annotated[list[str], typer.Option("--host", help="Host name or IP address it serves (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write NAME.pem (chain) and NAME-key.pem (0600).")],
    data_dir: DataDir = Path(".edge-cp"),
) -> None:
    """Issue a server certificate from the control plane's CA (creating the CA on first use), e.g. for Mosquitto:
    `edgectl certs issue broker --host broker.example --out /etc/mosquitto/certs` then in mosquitto.conf
    `cafile .../ca.pem`, `certfile .../broker.pem`, `keyfile .../broker-key.pem`."""
    ca = _ca(data_dir, create=True)
    out.mkdir(parents=True, exist_ok=True)
    ca_copy = out / "ca.pem"  # the chain's root, for the broker's `cafile`
    if ca_copy.resolve() != ca.cert_file.resolve():
        ca_copy.write_bytes(ca.pem)
    files = ca.ensure_server(name, host, datetime.now(UTC), directory=out)
    state_of(ctx).output.emit(
        {"cert": str(files.cert), "key": str(files.key), "ca": str(ca_copy), "sha256": ca_fingerprint(ca.pem)},
        lambda d: f"certificate {d['cert']}\nkey {d['key']} (0600)\nCA {d['ca']} (sha256 {d['sha256']})",
    )


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
