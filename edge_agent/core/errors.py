"""The agent's error hierarchy: what adapters raise so the core can decide without knowing the library.

Adapters wrap their library's exceptions into these; the core never sees an httpx or onnxruntime exception.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose; the text is meant for an operator."""


class FetchError(AgentError):
    """An artifact could not be fetched. `permanent` errors are not retried (404, bad scheme, too large)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class RunnerError(AgentError):
    """A model could not be loaded or run by the runtime."""


class InferenceInputError(AgentError):
    """An inference request the model cannot take (names, shapes, types); a client error, never a crash."""


class SelfTestError(AgentError):
    """The self-test artifact is unusable, or the model's answers differ from the reference outputs."""


class JournalError(AgentError):
    """The journal on disk cannot be read or written."""


class LockBusyError(AgentError):
    """Another process (the daemon or an `edge-agent apply`) is applying on this data directory."""


class EnrollmentError(AgentError):
    """Enrolling did not work. `permanent` ones (a refused token, a malformed answer) are not asked again;
    the others (the control plane unreachable or failing) are, with backoff."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
