"""The REST client `edgectl` (and `edgectl demo`) talks to the control plane with.

It turns every transport or HTTP failure into one of two errors a person can act on: the server cannot be
reached (exit 2) or it refused the request (exit 1, with the server's own reason). It must never print, exit,
or retry on its own: callers decide what to show and how long to wait.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from edge_agent.protocol.validation import REQUEST_PARTS, describe_error

ProgressCallback = Callable[[int, int | None], None]  # (bytes so far, total or None)

DEFAULT_URL = "http://127.0.0.1:8080"
CHUNK_SIZE = 500  # items per request of a paged list (as kubectl's --chunk-size)


class CliError(Exception):
    """An error `edgectl` reports in one line and turns into an exit code."""

    exit_code = 1


class ServerUnreachable(CliError):
    """No HTTP answer at all: wrong URL, server down, network broken."""

    exit_code = 2

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"cannot reach the control plane at {url}: {cause}")
        self.url = url


class RequestRejected(CliError):
    """The server answered with an error status; `detail` is its reason, formatted for reading."""

    exit_code = 1

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"{method} {path} failed ({status}): {detail}")
        self.status = status
        self.detail = detail


def tls_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What httpx verifies an HTTPS server with: the control plane's CA when given, else the system's roots."""
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"{ca_file}: cannot use it as the control plane's CA: {exc}") from exc


def format_detail(payload: Any) -> str:
    """FastAPI's `{"detail": ...}`: a string, or a 422 list of {loc, msg} shown as `field: message` lines."""
    detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "\n".join(_format_validation_item(item) for item in detail) or "invalid request"
    return json.dumps(detail)


def _next_query(url: str, path: str, asked: dict[str, Any]) -> dict[str, Any]:
    """The query of a `rel="next"` link, for `path` on the same server; a link that would not move on is refused."""
    query = dict(httpx.URL(url).params.multi_items())
    if query == {k: str(v) for k, v in asked.items()}:
        raise CliError(f"GET {path}: the control plane named the same page as the next one")
    return query


def _format_validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    return describe_error(item, skip=REQUEST_PARTS, root="(request)")


class ApiClient:
    """Thin, typed-enough wrapper over the v1 REST routes of docs/api.md."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token  # for the event streams, which open their own connections
        self.verify = tls_verify(ca_file)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, headers=headers, verify=self.verify
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.base_url, _transport_reason(exc)) from exc
        _raise_for_status(method, path, response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=query).json()

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body).json()

    def pages(self, path: str, at_most: int | None = None, **params: Any) -> Iterator[list[Any]]:
        """Each page of a paged list route (a JSON array), following its `Link: <...>; rel="next"` header (RFC 8288,
        decision 0013) until the last page or `at_most` items. Only the link's query is taken: the next request goes
        to this client's server, so the token never follows a link elsewhere."""
        query = {k: v for k, v in params.items() if v is not None}
        left = at_most
        while left is None or left > 0:
            if left is not None:
                query["limit"] = min(int(query.get("limit", CHUNK_SIZE)), left)
            response = self.request("GET", path, params=query)
            page = response.json()
            if not isinstance(page, list):
                raise CliError(f"GET {path}: the control plane did not answer a list")
            page = page if left is None else page[:left]
            yield page
            left = None if left is None else left - len(page)
            following = response.links.get("next")
            if following is None or not page:
                return
            query = _next_query(following.get("url", ""), path, query)

    @contextmanager
    def _stream(self, path: str) -> Iterator[httpx.Response]:
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                _raise_for_status("GET", path, response)
                yield response
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.base_url, _transport_reason(exc)) from exc

    def download(
        self, path: str, dest: Path, on_progress: ProgressCallback | None = None, expected_sha256: str | None = None
    ) -> int:
        """Stream `path` into `dest` (written to a temporary name, renamed when complete); returns bytes.

        With `expected_sha256`, a file whose digest differs is deleted and refused, never left at `dest`.
        """
        partial = dest.with_name(dest.name + ".part")
        done = 0
        digest = hashlib.sha256()
        with self._stream(path) as response, partial.open("wb") as out:
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            for chunk in response.iter_bytes(chunk_size=1 << 16):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
            partial.unlink(missing_ok=True)
            raise CliError(f"downloaded {done} bytes whose sha256 is {digest.hexdigest()}, not {expected_sha256}")
        partial.replace(dest)
        return done

    # -- routes -----------------------------------------------------------------------------------------------

    def health(self) -> Any:
        """GET /healthz: its answer, also a 503's (a degraded control plane says what is wrong in the body)."""
        try:
            response = self._http.get("/healthz")
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.base_url, _transport_reason(exc)) from exc
        if response.status_code != 503:
            _raise_for_status("GET", "/healthz", response)
        return response.json()

    def status(self) -> Any:
        return self.get("/v1/status")

    def signing_key(self) -> Any:
        return self.get("/v1/keys/signing")

    def targets(self) -> Any:
        return self.get("/v1/targets")

    def models(self) -> Any:
        return self.get("/v1/models")

    def model(self, name: str) -> Any:
        return self.get(f"/v1/models/{name}")

    def versions(self, name: str) -> Any:
        return self.get(f"/v1/models/{name}/versions")

    def version(self, name: str, version: int) -> Any:
        return self.get(f"/v1/models/{name}/versions/{version}")

    def push_version(
        self,
        name: str,
        model: Path,
        samples: Path | None,
        metadata: str | None,
        external_data: Sequence[tuple[str, Path]] = (),
    ) -> Any:
        """Upload a version; `external_data` (location the model names, file) travel with it, streamed."""
        with ExitStack() as stack:
            files: list[tuple[str, tuple[str, Any, str]]] = [
                ("model", (model.name, stack.enter_context(model.open("rb")), "application/octet-stream"))
            ]
            if samples is not None:
                files.append(("samples", (samples.name, samples.read_bytes(), "application/octet-stream")))
            for location, path in external_data:
                stream = stack.enter_context(path.open("rb"))
                files.append(("external_data", (location, stream, "application/octet-stream")))
            data = {"metadata": metadata} if metadata is not None else None
            return self.request("POST", f"/v1/models/{name}/versions", files=files, data=data).json()

    def delete_model(self, name: str, version: int | None) -> Any:
        path = f"/v1/models/{name}" if version is None else f"/v1/models/{name}/versions/{version}"
        return self.request("DELETE", path).json()

    def samples(self, name: str, version: int) -> bytes:
        return self.request("GET", f"/v1/models/{name}/versions/{version}/samples").content

    def create_builds(
        self,
        name: str,
        version: int,
        targets: list[str],
        kinds: list[str] | None = None,
        precisions: list[str] | None = None,
        calibration: str | None = None,
    ) -> Any:
        body: dict[str, Any] = {"targets": targets}
        if kinds:
            body["kinds"] = kinds
        if precisions:
            body["precisions"] = precisions
        if calibration:
            body["calibration"] = calibration
        return self.post(f"/v1/models/{name}/versions/{version}/builds", body)

    def upload_calibration(self, name: str, version: int, path: Path) -> Any:
        files = {"file": (path.name, path.read_bytes(), "application/octet-stream")}
        return self.request("POST", f"/v1/models/{name}/versions/{version}/calibration", files=files).json()

    def build_logs(self, build_id: str) -> str:
        return self.request("GET", f"/v1/builds/{build_id}/logs").text

    def builders(self) -> Any:
        return self.get("/v1/builders")

    def register_builder(self, body: dict[str, Any]) -> Any:
        return self.post("/v1/builders", body)

    def cancel_build(self, build_id: str) -> Any:
        return self.post(f"/v1/builds/{build_id}/cancel", {})

    def builds(self, name: str, version: int) -> Any:
        return self.get(f"/v1/models/{name}/versions/{version}/builds")

    def build(self, build_id: str) -> Any:
        return self.get(f"/v1/builds/{build_id}")

    def devices(self, selector: str | None = None) -> Any:
        """Every device the selector matches (all pages)."""
        return [device for page in self.device_pages(selector) for device in page]

    def device_pages(
        self, selector: str | None = None, chunk_size: int | None = None, at_most: int | None = None
    ) -> Iterator[list[Any]]:
        """The matching devices page by page (`chunk_size` per request; the server's default when None)."""
        return self.pages("/v1/devices", at_most, selector=selector, limit=chunk_size)

    def device(self, device_id: str) -> Any:
        return self.get(f"/v1/devices/{device_id}")

    def device_events(self, device_id: str, limit: int = 50) -> Any:
        return self.get(f"/v1/devices/{device_id}/events", limit=limit)

    def enroll_device(self, device_id: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", f"/v1/devices/{device_id}/enrollment", json=body).json()

    def forget_device(self, device_id: str, force: bool = False) -> None:
        self.request("DELETE", f"/v1/devices/{device_id}", params={"force": "true"} if force else None)

    def set_labels(self, device_id: str, labels: dict[str, str]) -> Any:
        return self.request("PUT", f"/v1/devices/{device_id}/labels", json={"labels": labels}).json()

    def create_enrollment_token(self, body: dict[str, Any]) -> Any:
        return self.post("/v1/enrollment-tokens", body)

    def enrollment_tokens(self) -> Any:
        return self.get("/v1/enrollment-tokens")

    def revoke_enrollment_token(self, token_id: str) -> Any:
        return self.post(f"/v1/enrollment-tokens/{token_id}/revoke", {})

    def enrollments(self, status: str | None = None) -> Any:
        return self.get("/v1/enrollments", status=status)

    def approve_device(self, device_id: str) -> Any:
        return self.post(f"/v1/devices/{device_id}/approve", {})

    def deny_device(self, device_id: str, reason: str | None = None) -> Any:
        return self.post(f"/v1/devices/{device_id}/deny", {"reason": reason})

    def create_playbook_run(self, body: dict[str, Any]) -> Any:
        return self.post("/v1/playbook-runs", body)

    def playbook_runs(self, limit: int = 50) -> Any:
        return self.get("/v1/playbook-runs", limit=limit)

    def playbook_run(self, run_id: str) -> Any:
        return self.get(f"/v1/playbook-runs/{run_id}")

    def cancel_playbook_run(self, run_id: str) -> Any:
        return self.post(f"/v1/playbook-runs/{run_id}/cancel", {})

    def create_rollout(self, body: dict[str, Any]) -> Any:
        return self.post("/v1/rollouts", body)

    def rollouts(self, at_most: int | None = None) -> Any:
        """The rollouts, newest first (every page, or the first `at_most`)."""
        return [rollout for page in self.pages("/v1/rollouts", at_most) for rollout in page]

    def rollout(self, rollout_id: str, cursor: str | None = None, limit: int | None = None) -> Any:
        """The rollout with one page of its devices (by device id; `next_cursor` in the answer asks for the next)."""
        return self.get(f"/v1/rollouts/{rollout_id}", cursor=cursor, limit=limit)

    def rollout_command(self, rollout_id: str, command: str) -> Any:
        """POST /v1/rollouts/{id}/pause|resume|abort|rollback."""
        return self.post(f"/v1/rollouts/{rollout_id}/{command}", {})

    def create_training_job(self, spec: dict[str, Any]) -> Any:
        return self.post("/v1/training/jobs", spec)

    def training_jobs(self) -> Any:
        return self.get("/v1/training/jobs")

    def training_job(self, job_id: str) -> Any:
        return self.get(f"/v1/training/jobs/{job_id}")

    def whoami(self) -> Any:
        return self.get("/v1/whoami")

    def create_token(self, body: dict[str, Any]) -> Any:
        return self.post("/v1/tokens", body)

    def tokens(self) -> Any:
        return self.get("/v1/tokens")

    def revoke_token(self, token_id: str) -> Any:
        return self.post(f"/v1/tokens/{token_id}/revoke", {})

    def audit(self, after: int = 0, limit: int = 100) -> Any:
        return self.get("/v1/audit", after=after, limit=limit)

    def tunnel_session_pages(self, include_closed: bool = False, at_most: int | None = None) -> Iterator[list[Any]]:
        """Tunnel sessions, newest first, page by page: the open ones, or every one recorded."""
        return self.pages("/v1/tunnel-sessions", at_most, all="true" if include_closed else None)

    def tunnel_session(self, session_id: str) -> Any:
        return self.get(f"/v1/tunnel-sessions/{session_id}")

    def close_tunnel_session(self, session_id: str) -> Any:
        return self.post(f"/v1/tunnel-sessions/{session_id}/close", {})


def _raise_for_status(method: str, path: str, response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        detail = format_detail(response.json())
    except ValueError:
        detail = response.text.strip() or response.reason_phrase
    if response.status_code == 401:
        detail += " (give a token: --token, EDGECTL_TOKEN, or `edgectl login`)"
    raise RequestRejected(method, path, response.status_code, detail)


def _transport_reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"connection refused or host unknown ({text})"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({text})"
    return text
