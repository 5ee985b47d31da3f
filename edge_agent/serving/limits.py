"""What one request, and the large requests together, may make the agent hold in memory or wait for.

The values come from agent.yaml (`serving:`, edge_agent/config.py: bounds and descriptions); the defaults here are
the defaults there. Pure: no HTTP and no numpy, so the settings can name it without importing the codec.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingLimits:
    """Bounds on what requests may make the agent hold in memory.

    A JSON body costs about ten times its size while parsed (one Python object per number), so its limit is
    lower than the binary body's; large tensors belong in the binary extension. Any number of requests under
    `large_request_bytes` may be read at once (each holds at most that much); at most `max_large_requests` over it
    (or of unknown size: chunked) are read at once, so together they hold at most that many times `max_body_bytes`.
    """

    max_elements: int = 16_000_000
    max_json_bytes: int = 32 * 1024 * 1024
    max_body_bytes: int = 128 * 1024 * 1024
    large_request_bytes: int = 1024 * 1024
    max_large_requests: int = 4
    body_timeout_s: float = 60.0

    def body_limit(self, binary: bool) -> int:
        return self.max_body_bytes if binary else self.max_json_bytes
