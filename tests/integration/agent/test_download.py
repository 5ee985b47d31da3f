"""Resumable downloads against a real HTTP server (Starlette FileResponse) on loopback."""

from __future__ import annotations

import hashlib

import pytest

from edge_agent.adapters.download import HttpFetcher
from edge_agent.core.errors import FetchError
from edge_agent.protocol import ArtifactRef
from tests.integration.agent.harness import ArtifactServer

pytestmark = pytest.mark.integration
SIZE = 1_000_000


@pytest.fixture
def blob(tmp_path):
    data = bytes(range(256)) * (SIZE // 256) + b"x" * (SIZE % 256)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "blob.bin").write_bytes(data)
    return data


def ref(server: ArtifactServer, data: bytes) -> ArtifactRef:
    return ArtifactRef(url=f"{server.url}/blob.bin", sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def test_a_cut_transfer_resumes_with_range_instead_of_restarting(tmp_path, blob):
    with ArtifactServer(tmp_path / "srv", cut_first_after=400_000) as server:
        HttpFetcher(max_attempts=3, backoff_s=0.01).fetch(ref(server, blob), tmp_path / "out" / "blob")

    assert (tmp_path / "out" / "blob").read_bytes() == blob
    first, second = server.served("blob.bin")
    assert first.range is None and 0 < first.sent < SIZE
    assert second.range == f"bytes={first.sent}-" and second.status == 206
    assert first.sent + second.sent < 2 * SIZE
    assert not (tmp_path / "out" / "blob.part").exists()


def test_a_server_ignoring_range_answers_200_and_the_file_restarts(tmp_path, blob):
    out = tmp_path / "out"
    out.mkdir()
    (out / "blob.part").write_bytes(blob[:1000])
    with ArtifactServer(tmp_path / "srv", ignore_range=True) as server:
        HttpFetcher(max_attempts=1).fetch(ref(server, blob), out / "blob")
    assert (out / "blob").read_bytes() == blob
    [only] = server.served("blob.bin")
    assert (only.range, only.status) == ("bytes=1000-", 200)


def test_a_corrupt_partial_file_is_detected_and_downloaded_again(tmp_path, blob):
    out = tmp_path / "out"
    out.mkdir()
    (out / "blob.part").write_bytes(b"garbage that must not stay at the front")
    with ArtifactServer(tmp_path / "srv") as server:
        HttpFetcher(max_attempts=2, backoff_s=0.01).fetch(ref(server, blob), out / "blob")
    assert (out / "blob").read_bytes() == blob
    assert [r.range for r in server.served("blob.bin")] == ["bytes=39-", None]


def test_missing_artifact_is_a_permanent_error_without_retries(tmp_path, blob):
    with ArtifactServer(tmp_path / "srv") as server:
        missing = ArtifactRef(url=f"{server.url}/nope.bin", sha256="0" * 64, size=10)
        with pytest.raises(FetchError, match="HTTP 404") as caught:
            HttpFetcher(max_attempts=5, backoff_s=0.01).fetch(missing, tmp_path / "out")
    assert caught.value.permanent and len(server.served("nope.bin")) == 1
