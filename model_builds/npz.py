"""Read an `.npz` from outside with bounded memory: a 1 MiB zip bomb must cost kilobytes to refuse, not gigabytes.

`numpy.load` trusts the archive: it inflates each member and allocates whatever an array header declares. Here
the zip's own records are checked first (entry count and central-directory size from the end record, before
`zipfile` builds an object per entry; then every member's declared uncompressed size against the budget), then
each array's header (its shape times its item size must fit what is left and what the member declares), and only
then are bytes inflated, counted as they are read: a member that inflates past what it declared is refused too.
It must never unpickle (object arrays are refused) and never hold more than the budget.
"""

from __future__ import annotations

import math
import struct
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

Arrays = dict[str, npt.NDArray[Any]]

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_EOCD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_CENTRAL_ENTRY_MAX = 46 + 3 * 0xFFFF  # fixed part plus the largest name, extra field and comment
_MAX_HEADER = 10_000  # numpy's own default bound on an .npy header
_CHUNK = 1 << 20
# numpy parses an .npy header with `ast.literal_eval`; CPython 3.11 keeps the AST constructor's recursion depth in
# one per-interpreter counter, so two threads parsing at once can raise "SystemError: AST constructor recursion
# depth mismatch" (python/cpython#106905). Header reads (at most _MAX_HEADER bytes each) take turns.
_HEADERS = threading.Lock()


class NpzError(ValueError):
    """Not a readable `.npz` of plain arrays; the text says why and names no host path."""


class NpzTooLarge(NpzError):
    """The archive declares, or inflates to, more than its limits allow; nothing past the limit was read."""


@dataclass(frozen=True)
class NpzLimits:
    max_total_bytes: int = 1 << 30  # all arrays together, decompressed
    max_members: int = 1024


def read_npz(path: Path, limits: NpzLimits = NpzLimits()) -> Arrays:
    """The named arrays of the `.npz` at `path` (names without `.npy`), within `limits`; NpzError otherwise."""
    try:
        with path.open("rb") as fh:
            _check_end_record(fh, limits)
            try:
                archive = zipfile.ZipFile(fh)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
                raise NpzError(f"not a readable .npz (zip) archive: {exc}") from exc
            with archive:
                return _read_members(archive, limits)
    except NpzError:
        raise
    except OSError as exc:  # its text would name the host path; the reason alone is enough
        raise NpzError(f"the .npz archive cannot be read: {exc.strerror or type(exc).__name__}") from exc
    except (zipfile.BadZipFile, ValueError, EOFError, RuntimeError, NotImplementedError) as exc:
        # zlib errors, CRC mismatches, unsupported compression, truncated members
        raise NpzError(f"the .npz archive cannot be read: {type(exc).__name__}: {exc}") from exc


def _check_end_record(fh: IO[bytes], limits: NpzLimits) -> None:
    """Entry count and central-directory size from the end record, before anything builds a per-entry object."""
    fh.seek(0, 2)
    size = fh.tell()
    tail_start = max(0, size - _EOCD_SIZE - _MAX_COMMENT)
    fh.seek(tail_start)
    tail = fh.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        raise NpzError("not a readable .npz archive (no zip end record); upload a file written by numpy.savez")
    entries, directory_size = struct.unpack("<10xHI6x", tail[at : at + _EOCD_SIZE])
    locator = at - 20
    if (
        (entries == 0xFFFF or directory_size == 0xFFFFFFFF)
        and locator >= 0
        and tail[locator : locator + 4] == (_EOCD64_LOCATOR)
    ):
        (offset,) = struct.unpack("<8xQ4x", tail[locator : locator + 20])
        fh.seek(offset)
        record = fh.read(56)
        if len(record) < 56 or record[:4] != _EOCD64:
            raise NpzError("the .npz archive's zip64 end record is damaged")
        entries, directory_size = struct.unpack("<32xQQ8x", record)
    if entries > limits.max_members:
        raise NpzTooLarge(f"the .npz archive holds {entries} members; at most {limits.max_members} are accepted")
    if directory_size > limits.max_members * _CENTRAL_ENTRY_MAX:
        raise NpzTooLarge(f"the .npz archive's directory is {directory_size} bytes, too large for its member count")


def _read_members(archive: zipfile.ZipFile, limits: NpzLimits) -> Arrays:
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise NpzTooLarge(f"the .npz archive holds {len(members)} members; at most {limits.max_members} are accepted")
    declared = sum(m.file_size for m in members)
    if declared > limits.max_total_bytes:
        raise NpzTooLarge(
            f"the .npz archive declares {declared} bytes uncompressed; at most {limits.max_total_bytes} are accepted"
        )
    arrays: Arrays = {}
    budget = limits.max_total_bytes
    for member in members:
        name = member.filename.removesuffix(".npy")
        if not member.filename.endswith(".npy") or member.is_dir():
            raise NpzError(f"the .npz archive holds {member.filename!r}, which is not a .npy array")
        if name in arrays:
            raise NpzError(f"the .npz archive holds array {name!r} twice")
        with archive.open(member) as raw:
            stream = _Counted(raw, member.file_size, name)
            array = _read_array(stream, name, budget)
            stream.expect_end()
        budget -= array.nbytes
        arrays[name] = array
    if not arrays:
        raise NpzError("the .npz archive holds no arrays")
    return arrays


class _Counted:
    """Reads at most `declared` bytes of a member, refusing one that inflates past what its header declared."""

    def __init__(self, raw: IO[bytes], declared: int, name: str) -> None:
        self._raw = raw
        self._left = declared
        self._name = name

    def read(self, size: int) -> bytes:
        data = self._raw.read(min(size, self._left + 1))
        if len(data) > self._left:
            raise NpzTooLarge(f"array {self._name!r} inflates past the size its archive entry declares")
        self._left -= len(data)
        return data

    def readinto(self, view: memoryview) -> int:
        done = 0
        while done < len(view):
            data = self.read(min(_CHUNK, len(view) - done))
            if not data:
                break
            view[done : done + len(data)] = data
            done += len(data)
        return done

    def expect_end(self) -> None:
        if self._raw.read(1):
            raise NpzError(f"array {self._name!r} has bytes after its data")


def _read_array(stream: _Counted, name: str, budget: int) -> npt.NDArray[Any]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)  # type: ignore[arg-type]
        with _HEADERS:
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(stream, max_header_size=_MAX_HEADER)  # type: ignore[arg-type]
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(stream, max_header_size=_MAX_HEADER)  # type: ignore[arg-type]
            else:
                raise ValueError(f"format version {version} is not accepted (1.0 or 2.0, as numpy.savez writes)")
    except ValueError as exc:
        raise NpzError(f"array {name!r} is not a valid .npy: {exc}") from exc
    if dtype.hasobject:
        raise NpzError(f"array {name!r} holds Python objects; only plain numeric arrays are accepted")
    if any(dim < 0 for dim in shape):
        raise NpzError(f"array {name!r} has a negative dimension in its shape {list(shape)}")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes > budget:
        raise NpzTooLarge(
            f"array {name!r} declares {nbytes} bytes ({list(shape)} x {dtype.name}); "
            f"the .npz size limit leaves {budget}"
        )
    flat = np.empty(count, dtype=dtype)
    if nbytes and stream.readinto(memoryview(flat.view(np.uint8).data)) != nbytes:
        raise NpzError(f"array {name!r} is truncated: its data is shorter than its shape {list(shape)}")
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)
