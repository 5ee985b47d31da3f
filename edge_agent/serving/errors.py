"""The one error the serving API raises on purpose; pure, so the binary codec can raise it too.

The Open Inference Protocol's error object is `{"error": "<message>"}`; clients (tritonclient, KServe's) read that
field and nothing else. The app answers every refusal in that shape (app.py) with the status the spec and common
servers use: 400 malformed request, 404 unknown model or version, 408 body not sent in time, 413 body over the
limit, 415 unsupported encoding, 503 model not loaded yet or too many large requests at once (with Retry-After),
500 the model failed. Must never be raised with a 5xx for something the client sent.
"""

from __future__ import annotations

from collections.abc import Mapping


class ProtocolError(Exception):
    """A request the server answers with `status`, `{"error": message}` and `headers` (e.g. Retry-After)."""

    def __init__(self, message: str, status: int = 400, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = dict(headers or {})
