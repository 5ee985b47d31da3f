"""Reading an inference request's body within a size limit and a deadline, before anything parses it.

A declared Content-Length over the limit is answered 413 without reading a byte; a chunked body is read only up
to the limit. Compressed bodies are refused (415) rather than inflated: a few kilobytes of gzip can expand to
gigabytes. A body that has not arrived by its deadline is a 408, so a client sending slowly cannot hold its memory
(or one of the large-request places, admission.py) for ever. Must never hold more than the limit of one body in
memory, whatever the client declares.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from edge_agent.serving.errors import ProtocolError

# A Content-Length of more digits than this is over any limit (and past what int() parses quickly).
_MAX_LENGTH_DIGITS = 19


def _too_large(size: str, limit: int) -> ProtocolError:
    return ProtocolError(
        f"the request body is {size} bytes, over the limit of {limit}; send large tensors with the binary tensor "
        "data extension (Inference-Header-Content-Length) or in smaller batches",
        413,
    )


def declared_length(request: Request, limit: int) -> int | None:
    """The body's declared size, refused when over `limit` before a byte is read; None when not declared (chunked)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ProtocolError(f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed", 415)
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    text = declared.strip()
    if not (text.isascii() and text.isdigit()):  # '²' is a digit to str.isdigit, not to int()
        raise ProtocolError(f"Content-Length must be a byte count, got {declared[:40]!r}")
    if len(text) > _MAX_LENGTH_DIGITS or int(text) > limit:
        raise _too_large(text[:20], limit)
    return int(text)


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(f"more than {limit}", limit)
                chunks.append(chunk)
    except ClientDisconnect:  # nobody to answer; the status only keeps it out of the server-error log
        raise ProtocolError(f"the client left before its body arrived ({size} bytes came)") from None
    except TimeoutError:
        raise ProtocolError(
            f"the request body did not arrive within {timeout_s:g} s ({size} bytes came); "
            "the agent's serving.body_timeout_s bounds how long one body may take",
            408,
        ) from None
    return b"".join(chunks)
