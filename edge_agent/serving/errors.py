"""The one error the serving API raises on purpose; pure, so the binary codec can raise it too.

The Open Inference Protocol's error object is `{"error": "<message>"}`; clients (tritonclient, KServe's) read that
field and nothing else. The app answers every refusal in that shape (app.py) with the status the spec and common
servers use: 400 malformed request, 404 unknown model or version, 413 body over the limit, 415 unsupported encoding,
503 model not loaded yet, 500 the model failed. Must never be raised with a 5xx for something the client sent.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A request the server answers with `status` and `{"error": message}`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
