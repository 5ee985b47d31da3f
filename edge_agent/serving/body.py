"""Reading an inference request's body within a limit, before anything parses it.

A declared Content-Length over the limit is answered 413 without reading a byte; a chunked body is read only up
to the limit. Compressed bodies are refused (415) rather than inflated: a few kilobytes of gzip can expand to
gigabytes. Must never hold more than the limit of one body in memory, whatever the client declares.
"""

from __future__ import annotations

from starlette.requests import Request

from edge_agent.serving.errors import ProtocolError


def _too_large(size: str, limit: int) -> ProtocolError:
    return ProtocolError(
        f"the request body is {size} bytes, over the limit of {limit}; send large tensors with the binary tensor "
        "data extension (Inference-Header-Content-Length) or in smaller batches",
        413,
    )


async def read_body(request: Request, limit: int) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ProtocolError(f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed", 415)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ProtocolError(f"Content-Length must be a byte count, got {declared[:40]!r}")
        if int(declared) > limit:
            raise _too_large(declared.strip()[:20], limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit}", limit)
        chunks.append(chunk)
    return b"".join(chunks)
