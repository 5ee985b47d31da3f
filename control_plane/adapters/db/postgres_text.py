"""Text sent to PostgreSQL never carries a NUL character (PostgreSQL refuses it in text; it becomes U+FFFD, as the
audit log's own bounding does). Imported only for a PostgreSQL engine: psycopg is an optional dependency (the
`postgres` extra). Nothing here changes what is read back, nor text sent as JSON (escaped there as \\u0000)."""

from __future__ import annotations

from typing import Any

from psycopg.types.string import StrBinaryDumper, StrDumper, StrDumperUnknown

NUL, REPLACEMENT = "\x00", "\ufffd"


class _TextDumper(StrDumper):
    def dump(self, obj: str) -> Any:
        return super().dump(obj.replace(NUL, REPLACEMENT))


class _BinaryTextDumper(StrBinaryDumper):
    def dump(self, obj: str) -> Any:
        return super().dump(obj.replace(NUL, REPLACEMENT))


class _UntypedTextDumper(StrDumperUnknown):
    def dump(self, obj: str) -> Any:
        return super().dump(obj.replace(NUL, REPLACEMENT))


def register_nul_safe_text(connection: Any) -> None:
    """Replace psycopg's str dumpers on `connection` (a psycopg.Connection); the untyped one last, as psycopg
    registers it, so it stays the default for text parameters."""
    for dumper in (_BinaryTextDumper, _TextDumper, _UntypedTextDumper):
        connection.adapters.register_dumper(str, dumper)
