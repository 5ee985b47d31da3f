"""`serve(settings)`: run the API with uvicorn until SIGTERM/SIGINT, then shut down cleanly (lifespan exit).

With `tls.enabled` it serves HTTPS: the operator's certificate, or one the control plane's CA issues for the
names in `ServerSettings.server_names()` (the CA is created on first start; control_plane/adapters/pki.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import uvicorn

from control_plane.adapters.pki import CertificateAuthority, ca_fingerprint
from control_plane.api.app import create_app
from control_plane.settings import ServerSettings

log = logging.getLogger(__name__)


def serve(settings: ServerSettings) -> None:
    """Blocking. uvicorn installs the SIGTERM/SIGINT handlers and runs the lifespan shutdown on either."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=10,
        **tls_options(settings, datetime.now(UTC)),
    )
    uvicorn.Server(config).run()


def tls_options(settings: ServerSettings, now: datetime) -> dict[str, Any]:
    """uvicorn's ssl_* arguments: {} for plain HTTP."""
    if not settings.tls.enabled:
        return {}
    if settings.tls.cert_file is not None and settings.tls.key_file is not None:
        return {"ssl_certfile": str(settings.tls.cert_file), "ssl_keyfile": str(settings.tls.key_file)}
    ca = CertificateAuthority(settings.pki_dir)
    ca.ensure(now)
    files = ca.ensure_server("api", settings.server_names(), now)
    log.info("HTTPS with the control plane's CA %s (sha256 %s)", "data_dir/pki/ca.pem", ca_fingerprint(ca.pem))
    return {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
