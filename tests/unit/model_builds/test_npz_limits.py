"""`.npz` files from outside are read within limits: a zip bomb, a lying archive, a header that declares a huge
array, or an archive of a million entries is refused before its size is allocated, at a cost of kilobytes."""

from __future__ import annotations

import io
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model_builds.npz import NpzError, NpzLimits, NpzTooLarge, read_npz
from tests.unit.model_builds.hostile_files import many_members, npy_header, write, zip_bomb

GiB = 1 << 30
MiB = 1 << 20
LIMITS = NpzLimits(max_total_bytes=64 * MiB, max_members=64)


def npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def raw_member(name: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(name, content)
    return out.getvalue()


def test_plain_arrays_read_back_exactly_as_numpy_wrote_them(tmp_path: Path) -> None:
    arrays: dict[str, np.ndarray] = {
        "input:X": np.arange(12, dtype=np.float32).reshape(3, 4),
        "output:Y": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
        "flag": np.array(True),
        "big_endian": np.arange(3, dtype=">f8"),
        "empty": np.zeros((0, 4), np.float16),
    }
    got = read_npz(write(tmp_path / "s.npz", npz(**arrays)), LIMITS)
    assert sorted(got) == sorted(arrays)
    for name, want in arrays.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        np.testing.assert_array_equal(got[name], want)


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        pytest.param(zip_bomb(2 * GiB), NpzTooLarge, "declares 2147483776 bytes uncompressed", id="zip-bomb-2GiB"),
        # zipfile stops at the size the records declare and then finds the CRC wrong; the reader counts, too
        pytest.param(zip_bomb(256 * MiB, declared_bytes=4096), NpzError, "Bad CRC|inflates past", id="records-lie"),
        pytest.param(
            raw_member("X.npy", npy_header((2**40,))), NpzTooLarge, "declares 4398046511104 bytes", id="header-huge"
        ),
        pytest.param(many_members(65), NpzTooLarge, "holds 65 members; at most 64", id="too-many-members"),
        pytest.param(
            raw_member("X.npy", npy_header((4,), "|O") + b"x" * 32), NpzError, "Python objects", id="pickled-objects"
        ),
        pytest.param(raw_member("X.npy", npy_header((64,)) + bytes(16)), NpzError, "truncated", id="truncated"),
        pytest.param(raw_member("X.npy", npy_header((1,)) + bytes(8)), NpzError, "bytes after", id="trailing"),
        pytest.param(raw_member("X.txt", b"hello"), NpzError, "not a .npy array", id="not-npy-member"),
        pytest.param(raw_member("X.npy", b"\x93NUMPY\x09\x00"), NpzError, "not a valid .npy", id="bad-npy-version"),
        pytest.param(b"PK\x03\x04 not really", NpzError, "not a readable .npz", id="not-a-zip"),
        pytest.param(b"", NpzError, "not a readable .npz", id="empty"),
        pytest.param(raw_member("X.npy", npy_header((-1,)) + bytes(4)), NpzError, "negative dimension", id="negative"),
    ],
)
def test_hostile_archives_are_refused_for_kilobytes(
    tmp_path: Path, content: bytes, error: type[Exception], message: str
) -> None:
    path = write(tmp_path / "hostile.npz", content)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(error, match=message) as refused:
            read_npz(path, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 4 * MiB, f"refusing cost {peak / MiB:.1f} MiB"
    assert str(tmp_path) not in str(refused.value)


def test_the_budget_is_for_all_arrays_together(tmp_path: Path) -> None:
    each = np.zeros(3 * MiB // 4, np.float32)  # 3 MiB, fine alone
    path = write(tmp_path / "s.npz", npz(a=each, b=each))
    assert set(read_npz(path, NpzLimits(max_total_bytes=8 * MiB))) == {"a", "b"}
    with pytest.raises(NpzTooLarge, match="at most 5242880"):
        read_npz(path, NpzLimits(max_total_bytes=5 * MiB))


def test_numpy_itself_would_have_inflated_the_bomb(tmp_path: Path) -> None:
    """What the limit protects against: numpy trusts the header and allocates its shape before reading."""
    path = write(tmp_path / "bomb.npz", zip_bomb(64 * MiB))
    assert path.stat().st_size < 128 * 1024
    with np.load(path) as loaded:
        assert loaded["input:X"].nbytes == 64 * MiB
