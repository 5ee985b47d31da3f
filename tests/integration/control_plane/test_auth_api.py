"""The trust boundary over real HTTP: what a caller without a token, with a viewer's token, a revoked one, a
device's or an SSO JWT from a foreign key does NOT get (docs/security.md).

Operations are enumerated from the app's own OpenAPI document, so a route added later is covered at once.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.integration.control_plane.helpers import deployable
from tests.support import ADMIN_TOKEN, Mosquitto, mint_token

pytestmark = pytest.mark.integration

ANONYMOUS = {("get", "/healthz"), ("get", "/v1/keys/signing")}


def operations(api: httpx.Client) -> list[tuple[str, str]]:
    schema = api.get("/openapi.json").json()
    ops = [(m, p) for p, methods in schema["paths"].items() for m in methods]
    return sorted(op for op in ops if op not in ANONYMOUS)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def call(url: str, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method.upper(), url + concrete(path), headers=headers, json={}, timeout=30)


def test_no_operation_but_health_and_the_key_answers_without_a_token(control_plane: RunningServer) -> None:
    ops = operations(control_plane.http)
    assert len(ops) >= 40
    answers = {(m, p): call(control_plane.url, m, p, None) for m, p in ops}
    wrong = {op: a.status_code for op, a in answers.items() if a.status_code != 401}
    assert wrong == {}
    sample = next(iter(answers.values()))
    assert sample.headers["www-authenticate"].startswith("Bearer")
    assert "bearer token" in sample.json()["detail"]
    assert httpx.get(control_plane.url + "/healthz").status_code == 200
    assert httpx.get(control_plane.url + "/v1/keys/signing").status_code == 200


def test_a_viewer_reads_but_every_change_is_forbidden(control_plane: RunningServer) -> None:
    api = control_plane.http
    viewer = mint_token(api, "viewer", "auditor")
    before = api.get("/v1/devices").json(), api.get("/v1/rollouts").json(), api.get("/v1/tokens").json()
    mutating = [(m, p) for m, p in operations(api) if m != "get"]
    answers = {(m, p): call(control_plane.url, m, p, viewer).status_code for m, p in mutating}
    assert {op: s for op, s in answers.items() if s != 403} == {}
    # The viewer's attempts left no trace in what it could have changed (its own token was the admin's doing).
    after = api.get("/v1/devices").json(), api.get("/v1/rollouts").json(), api.get("/v1/tokens").json()
    assert after[:2] == before[:2]
    assert [t["id"] for t in after[2]] == [t["id"] for t in before[2]]
    assert call(control_plane.url, "get", "/v1/models", viewer).status_code == 200
    assert call(control_plane.url, "get", "/v1/tokens", viewer).status_code == 403


def test_an_unauthenticated_body_is_refused_before_it_is_parsed(control_plane: RunningServer) -> None:
    """No token: 401, not a 422 about the garbage body (the control plane never looked at it)."""
    answer = httpx.post(control_plane.url + "/v1/rollouts", content=b"{not json" * 1000, timeout=30)
    assert answer.status_code == 401
    upload = httpx.post(
        control_plane.url + "/v1/models/nobody/versions", files={"model": ("m.onnx", b"\0" * 1_000_000)}, timeout=30
    )
    assert upload.status_code == 401
    assert control_plane.http.get("/v1/models/nobody").status_code == 404


def test_token_lifecycle_operator_cannot_mint_and_revocation_is_immediate(control_plane: RunningServer) -> None:
    api = control_plane.http
    created = api.post("/v1/tokens", json={"name": "ci-deployer", "role": "operator", "expires_in_s": 3600})
    assert created.status_code == 201, created.text
    body = created.json()
    secret, token_id = body["token"], body["id"]
    assert body["created_by"].startswith("token:") and body["expires_at"] is not None
    me = httpx.get(control_plane.url + "/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).json()
    assert (me["name"], me["role"]) == ("ci-deployer", "operator") and "rollout:write" in me["permissions"]
    escalate = call(control_plane.url, "post", "/v1/tokens", secret)
    assert escalate.status_code == 403 and "token:admin" in escalate.json()["detail"]
    listed = api.get("/v1/tokens").json()
    assert token_id in [t["id"] for t in listed]
    assert secret not in json.dumps(listed)
    assert api.post(f"/v1/tokens/{token_id}/revoke").json()["revoked_at"] is not None
    refused = call(control_plane.url, "get", "/v1/models", secret)
    assert refused.status_code == 401 and refused.json()["detail"] == "token revoked"


def test_artifacts_are_served_to_a_device_token_and_to_nobody_anonymous(control_plane: RunningServer) -> None:
    build = deployable(control_plane.http, "auth-artifact")
    url = f"{control_plane.url}/v1/artifacts/{build['artifact_sha256']}"
    assert httpx.get(url).status_code == 401
    device = mint_token(control_plane.http, "device", "agent-auth-1", "auth-1")
    answer = httpx.get(url, headers={"Authorization": f"Bearer {device}"})
    assert answer.status_code == 200 and len(answer.content) == build["artifact_size"]
    # A device token reads artifacts and nothing else of the fleet.
    assert call(control_plane.url, "get", "/v1/devices", device).status_code == 403


def test_first_start_writes_an_admin_token_readable_by_its_owner_only(mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings = server_settings(mosquitto, tmp_path / "data").model_copy(update={"bootstrap_token": None})
    server = start_server(settings)
    try:
        token_file = tmp_path / "data" / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        secret = token_file.read_text().strip()
        assert call(server.url, "get", "/v1/tokens", secret).status_code == 200
        assert call(server.url, "get", "/v1/tokens", ADMIN_TOKEN).status_code == 401
    finally:
        server.stop()
    again = start_server(settings.model_copy(update={"port": settings.port}))
    try:
        assert token_file.read_text().strip() == secret  # not replaced: the database already holds tokens
        assert call(again.url, "get", "/v1/tokens", secret).status_code == 200
    finally:
        again.stop()


# --- single sign-on against a JWKS served on loopback -------------------------------------------------------


class _Jwks(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def issuer_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_url(issuer_key: rsa.RSAPrivateKey) -> Iterator[str]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(issuer_key.public_key()))
    handler = type("Jwks", (_Jwks,), {"body": json.dumps({"keys": [public | {"kid": "k1", "use": "sig"}]}).encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        thread.join()


ISSUER = "https://sso.example.test/realms/edge"


def sso_token(key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "aud": "edge-control-plane",
        "sub": "u-42",
        "preferred_username": "ana",
        "groups": ["edge-ops"],
        "iat": now,
        "exp": now + timedelta(minutes=5),
    } | overrides
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def sso_server(mosquitto: Mosquitto, tmp_path: Path, jwks_url: str) -> Iterator[RunningServer]:
    oidc = {
        "issuer": ISSUER,
        "jwks_url": jwks_url,
        "audience": "edge-control-plane",
        "roles_claim": "groups",
        "role_map": {"edge-ops": "operator", "edge-viewers": "viewer"},
    }
    settings = server_settings(mosquitto, tmp_path / "data")
    server = start_server(settings.model_copy(update={"oidc": type(settings.oidc).model_validate(oidc)}))
    try:
        yield server
    finally:
        server.stop()


def test_sso_users_act_with_their_mapped_role(sso_server: RunningServer, issuer_key: rsa.RSAPrivateKey) -> None:
    me = call(sso_server.url, "get", "/v1/whoami", sso_token(issuer_key))
    assert me.status_code == 200, me.text
    assert (me.json()["subject"], me.json()["name"], me.json()["role"]) == ("oidc:u-42", "ana", "operator")
    viewer = sso_token(issuer_key, groups=["edge-viewers"])
    assert call(sso_server.url, "post", "/v1/rollouts", viewer).status_code == 403
    unmapped = call(sso_server.url, "get", "/v1/models", sso_token(issuer_key, groups=["sales"]))
    assert unmapped.status_code == 403 and "ana" in unmapped.json()["detail"]


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        pytest.param(lambda k: sso_token(rsa.generate_private_key(65537, 2048)), "Signature", id="foreign-key"),
        pytest.param(lambda k: sso_token(k, aud="another-app"), "audience", id="wrong-audience"),
        pytest.param(lambda k: sso_token(k, iss="https://evil.test"), "issuer", id="wrong-issuer"),
        pytest.param(lambda k: sso_token(k, exp=datetime.now(UTC) - timedelta(minutes=5)), "expired", id="expired"),
        pytest.param(
            lambda k: jwt.encode(
                {"iss": ISSUER, "aud": "edge-control-plane", "sub": "u"}, "k" * 32, "HS256", headers={"kid": "k1"}
            ),
            "",
            id="symmetric-alg",
        ),
    ],
)
def test_forged_sso_tokens_are_nobody(
    sso_server: RunningServer, issuer_key: rsa.RSAPrivateKey, forge: Any, reason: str
) -> None:
    answer = call(sso_server.url, "get", "/v1/models", forge(issuer_key))
    assert answer.status_code == 401, answer.text
    assert reason.lower() in answer.json()["detail"].lower()
