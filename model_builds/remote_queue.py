"""The builder protocol's client: a `BuildQueue` over the control plane's REST builder routes (docs/builds.md).

`edgectl build-worker` and agents with `builder: true` use this one implementation. Every call carries the
builder's bearer token (role `builder`): the control plane leases a build to the identity of that token, and only
it may renew, complete or fail the build; `builder_id` is sent as a label for people. Downloads are resumed with
HTTP Range and checked against the task's sha256 and size before anything runs them; a corrupted file is
deleted and refused. It must never decide build outcomes: it carries claims, heartbeats and reports.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from pydantic import ValidationError

from edge_agent.protocol.validation import describe_error
from model_builds.digests import CHUNK, file_digest
from model_builds.execute import BuildProduct
from model_builds.protocol import BuilderClaim, BuilderInfo, BuildFailure, BuildHeartbeat, BuildTask, RemoteFile

# Answers to a heartbeat that mean "stop working on this build": not found, not yours (lease lost, cancelled),
# or this builder's token is no longer accepted.
STOP = frozenset({401, 403, 404, 409})


class QueueError(RuntimeError):
    """The control plane refused a call or answered something unusable; the text says which and why."""


class HttpBuildQueue:
    def __init__(
        self,
        base_url: str,
        builder_id: str,
        timeout_s: float = 30,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`verify`: how to check an https:// control plane (an SSLContext holding its CA; True: system roots)."""
        self._base = base_url.rstrip("/") + "/"
        self.builder_id = builder_id
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self._base, timeout=timeout_s, headers=headers, transport=transport, verify=verify
        )

    def close(self) -> None:
        self._client.close()

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.post(path, **kwargs)
        except httpx.HTTPError as exc:
            raise QueueError(f"POST {path}: {exc}") from exc

    def claim(self, info: BuilderInfo) -> BuildTask | None:
        claim = BuilderClaim.of(info).model_copy(update={"builder_id": self.builder_id})
        response = self._post("v1/builders/claim", json=claim.model_dump(mode="json"))
        if response.status_code == 204:
            return None
        _expect(response, "claim")
        try:
            return BuildTask.model_validate_json(response.content)
        except ValidationError as exc:
            why = describe_error(exc.errors()[0])
            raise QueueError(f"claim: the control plane sent an unusable task: {why}") from exc

    def fetch(self, remote: RemoteFile, dest: Path) -> Path:
        """Download `remote` to `dest` (resuming a partial `dest.part`), refusing it unless sha256 and size match."""
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if 0 < have < remote.size else {}
        try:
            with self._client.stream("GET", urljoin(self._base, remote.url), headers=headers) as response:
                if response.status_code not in (200, 206):
                    raise QueueError(f"download {remote.url}: HTTP {response.status_code}")
                with part.open("ab" if response.status_code == 206 else "wb") as fh:
                    for chunk in response.iter_bytes(CHUNK):
                        fh.write(chunk)
        except httpx.HTTPError as exc:
            raise QueueError(f"download {remote.url}: {exc}") from exc
        sha, size = file_digest(part)
        if (sha, size) != (remote.sha256, remote.size):
            part.unlink(missing_ok=True)
            raise QueueError(
                f"download {remote.url} is corrupt: sha256 {sha[:12]}... size {size}, "
                f"expected {remote.sha256[:12]}... size {remote.size}; refused"
            )
        part.replace(dest)
        return dest

    def heartbeat(self, build_id: str, message: str | None, progress: float | None) -> bool:
        beat = BuildHeartbeat(
            builder_id=self.builder_id,
            message=None if message is None else message[:2000],
            progress=None if progress is None else min(max(progress, 0.0), 1.0),
        )
        try:
            response = self._post(
                f"v1/builds/{build_id}/heartbeat", json=beat.model_dump(mode="json", exclude_none=True)
            )
        except QueueError:
            return True  # unreachable for now: keep building; if the lease expires, complete is refused
        return response.status_code not in STOP

    def complete(self, build_id: str, product: BuildProduct) -> None:
        data = {"report": product.report().model_dump_json(), "builder_id": self.builder_id}
        with product.artifact.open("rb") as fh:
            files = {"artifact": (product.artifact.name, fh, "application/octet-stream")}
            response = self._post(f"v1/builds/{build_id}/complete", data=data, files=files)
        _expect(response, "complete")

    def fail(self, build_id: str, error: str) -> None:
        failure = BuildFailure(builder_id=self.builder_id, error=error[:4000] or "the builder gave no reason")
        response = self._post(f"v1/builds/{build_id}/fail", json=failure.model_dump(mode="json"))
        _expect(response, "fail")


def _expect(response: httpx.Response, what: str) -> None:
    if response.status_code in (401, 403):
        raise QueueError(
            f"{what}: HTTP {response.status_code}: {response.text[:500]} (a builder needs a token of role builder: "
            "`edgectl tokens create NAME --role builder` or `edgectl builders register`)"
        )
    if response.status_code != 200:
        raise QueueError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
