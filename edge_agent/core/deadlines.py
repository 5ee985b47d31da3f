"""Deadlines on the device steps of an apply, so that no download, hash, load or self-test can hang an apply.

A step runs in a worker thread; when it outlives its deadline the apply stops waiting and fails with
`deadline exceeded in <step> after <n> s`. The worker is abandoned, not killed (Python cannot kill a thread):
what it returns later is dropped. The serving table is only swapped after every step returned, so the previous
model keeps serving whatever an abandoned step does. Must never touch the serving table or the journal itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from edge_agent.core.errors import AgentError

T = TypeVar("T")


class DeviceStep(str, Enum):
    """The steps of an apply that have a deadline (names as they appear in the failure reason)."""

    DOWNLOAD = "download"
    VERIFY = "verify"
    LOAD = "load"
    SELF_TEST = "self-test"


@dataclass(frozen=True)
class Deadlines:
    """Seconds each step may take. `download_s` covers every attempt of one artifact, retries included."""

    download_s: float = 600.0
    verify_s: float = 120.0
    load_s: float = 300.0
    self_test_s: float = 120.0

    def of(self, step: DeviceStep) -> float:
        return {
            DeviceStep.DOWNLOAD: self.download_s,
            DeviceStep.VERIFY: self.verify_s,
            DeviceStep.LOAD: self.load_s,
            DeviceStep.SELF_TEST: self.self_test_s,
        }[step]


class DeadlineExceeded(AgentError):
    def __init__(self, step: DeviceStep, seconds: float) -> None:
        super().__init__(f"deadline exceeded in {step.value} after {seconds:g} s")
        self.step = step
        self.seconds = seconds


class _Outcome(Generic[T]):
    """What the worker produced: a value or the exception it raised, set once."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


def call_with_deadline(step: DeviceStep, seconds: float, work: Callable[[], T]) -> T:
    """`work()`'s result or exception, or DeadlineExceeded when it has not finished within `seconds`."""
    outcome: _Outcome[T] = _Outcome()

    def run() -> None:
        try:
            outcome.value = work()
        except BaseException as exc:  # handed to the waiting thread, which re-raises it
            outcome.error = exc
        finally:
            outcome.done.set()

    threading.Thread(target=run, name=f"apply-{step.value}", daemon=True).start()
    if not outcome.done.wait(seconds):
        raise DeadlineExceeded(step, seconds)
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]  # set by run() when no error was raised
