"""Artifact fetching: resumable HTTP(S) downloads with Range, `file://` copies, and a local artifact directory.

Imports httpx (so does `enrollment_client`). A cut transfer keeps its `.part` file and the next attempt asks for
`Range: bytes=N-`: 206 appends, 200 restarts. Never verifies digests (the core does) and never raises anything
but FetchError. With `deadline_s` it stops retrying and reading once that many seconds passed since the fetch
began, so a download abandoned by the core's deadline does not go on writing in the background.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from edge_agent.core.errors import FetchError
from edge_agent.protocol import ArtifactRef

log = logging.getLogger(__name__)
CHUNK = 64 * 1024


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


class HttpFetcher:
    def __init__(
        self,
        timeout_s: float = 30,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        artifact_dir: Path | None = None,
        deadline_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        token: str | None = None,
        ca_file: Path | None = None,
        on_bytes: Callable[[int], None] = lambda _size: None,
        on_retry: Callable[[], None] = lambda: None,
    ) -> None:
        # The device's artifact credential: the control plane serves artifacts only to a known identity.
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        # An https:// artifact URL is verified against the control plane's CA when the agent pins one.
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._timeout = httpx.Timeout(timeout_s)
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._artifact_dir = artifact_dir
        self._deadline_s = deadline_s
        self._monotonic = monotonic
        # What the agent's /metrics counts (edge_agent/core/metrics.py AgentTally): bytes received, retries.
        self._on_bytes = on_bytes
        self._on_retry = on_retry

    def fetch(self, artifact: ArtifactRef, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        local = self._artifact_dir / artifact.sha256 if self._artifact_dir else None
        if local is not None and local.is_file():
            _copy(local, dest)
            return
        url = urlparse(artifact.url)
        if url.scheme == "file":
            _copy(Path(unquote(url.path)), dest)
            return
        self._download(artifact, dest)

    def _download(self, artifact: ArtifactRef, dest: Path) -> None:
        ends = None if self._deadline_s is None else self._monotonic() + self._deadline_s
        for attempt in range(1, self._max_attempts + 1):
            try:
                self._attempt(artifact, dest, ends)
                return
            except FetchError as exc:
                if exc.permanent or attempt == self._max_attempts:
                    raise
                delay = min(self._backoff_s * 2 ** (attempt - 1), 30.0)
                if ends is not None and self._monotonic() + delay >= ends:
                    raise FetchError(
                        f"gave up after {attempt} attempt(s) within {self._deadline_s:g} s: {exc}"
                    ) from exc
                log.warning("download %s: attempt %d failed (%s); retry in %.1fs", artifact.url, attempt, exc, delay)
                self._on_retry()
                self._sleep(delay)

    def _attempt(self, artifact: ArtifactRef, dest: Path, ends: float | None = None) -> None:
        part = part_path(dest)
        have = part.stat().st_size if part.exists() else 0
        if have > artifact.size:
            part.unlink()
            have = 0
        headers = self._auth | ({"Range": f"bytes={have}-"} if have else {})
        try:
            with httpx.stream(
                "GET", artifact.url, headers=headers, timeout=self._timeout, verify=self._verify
            ) as response:
                mode = self._mode(response, have, artifact)
                if mode is None:  # 416: the .part already holds every byte
                    part.replace(dest)
                    return
                self._write(response, part, mode, artifact.size, self._past(ends), self._on_bytes)
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from exc
        if part.stat().st_size < artifact.size:
            raise FetchError(f"transfer ended after {part.stat().st_size} of {artifact.size} bytes")
        if have and _sha256(part) != artifact.sha256:
            # The kept prefix was not this artifact's (a changed file behind the URL, a corrupt disk):
            # start over instead of failing the apply.
            part.unlink()
            raise FetchError("resumed download does not match its digest; restarting from byte 0")
        part.replace(dest)

    @staticmethod
    def _mode(response: httpx.Response, have: int, artifact: ArtifactRef) -> str | None:
        status = response.status_code
        if status == 206 and have:
            log.info("resuming %s at byte %d", artifact.url, have)
            return "ab"
        if status == 200:
            return "wb"
        if status == 416 and have == artifact.size:
            return None
        permanent = 400 <= status < 500 and status not in (408, 425, 429)
        raise FetchError(f"HTTP {status} from {artifact.url}", permanent=permanent)

    def _past(self, ends: float | None) -> Callable[[], bool]:
        return lambda: ends is not None and self._monotonic() >= ends

    @staticmethod
    def _write(
        response: httpx.Response,
        part: Path,
        mode: str,
        limit: int,
        past_deadline: Callable[[], bool],
        on_bytes: Callable[[int], None],
    ) -> None:
        with part.open(mode) as handle:
            for chunk in response.iter_bytes(CHUNK):
                handle.write(chunk)
                on_bytes(len(chunk))
                if handle.tell() > limit:
                    raise FetchError(f"server sent more than the expected {limit} bytes", permanent=True)
                if past_deadline():
                    raise FetchError("download deadline passed; the .part file is kept for a resume", permanent=True)
            handle.flush()
            os.fsync(handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(source: Path, dest: Path) -> None:
    part = part_path(dest)
    try:
        shutil.copyfile(source, part)
    except OSError as exc:
        raise FetchError(f"cannot copy {source}: {exc.strerror or exc}", permanent=True) from exc
    part.replace(dest)
