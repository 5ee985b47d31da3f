"""What an operator asks of a rollout: the body of `POST /v1/rollouts`, validated once, stored with the rollout.

It is public (the API's request schema) and persisted (the planner reads it on every tick, also after a restart),
so it only grows compatible fields. Every validation error names the field it is about. Every number is bounded
(`domain/bounds.py`: durations to 30 days, counts to 64 bits, no inf or NaN): a request past a bound is refused
before anything is stored, never turned into a rollout whose first tick overflows.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from control_plane.domain.bounds import INT64_MAX, MAX_DURATION_S, MAX_RATIO

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
Percent = Annotated[float, Field(gt=0, le=100)]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StrategyType(str, Enum):
    ALL_AT_ONCE = "all-at-once"
    CANARY = "canary"


class OnFail(str, Enum):
    PAUSE = "pause"
    ABORT = "abort"


class Amount(_Spec):
    """A number of devices, or a percent of the selected fleet (exactly one)."""

    count: int | None = Field(default=None, ge=0, le=INT64_MAX)
    percent: Percent | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Amount:
        if (self.count is None) == (self.percent is None):
            raise ValueError("give exactly one of count or percent")
        return self

    def of(self, total: int, minimum: int = 0) -> int:
        """How many of `total` devices this amount means (a percent rounds up, so 10% of 3 is 1)."""
        n = self.count if self.count is not None else math.ceil(total * float(self.percent or 0) / 100 - 1e-9)
        return max(minimum, min(total, n))


class CanarySpec(Amount):
    labels: dict[str, str] = Field(default_factory=dict, description="Pick the canary among devices with these.")


class SelectorIn(_Spec):
    labels: dict[str, str] = Field(default_factory=dict)
    gpu_class: str | None = None


class MaintenanceWindow(_Spec):
    """UTC; a step only starts inside it. `end` before `start` spans midnight."""

    start: str
    end: str
    days: tuple[str, ...] = WEEKDAYS

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        parts = value.split(":")
        if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
            raise ValueError(f"{value!r} is not HH:MM")
        hours, minutes = int(parts[0]), int(parts[1])
        if hours > 23 or minutes > 59:
            raise ValueError(f"{value!r} is not a time of day")
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, days: tuple[str, ...]) -> tuple[str, ...]:
        bad = [d for d in days if d not in WEEKDAYS]
        if bad or not days:
            raise ValueError(f"days must be among {', '.join(WEEKDAYS)} (got {bad or 'none'})")
        return days

    def minutes(self, value: str) -> int:
        hours, minutes = value.split(":")
        return int(hours) * 60 + int(minutes)


class GateSpec(_Spec):
    max_failed: Amount = Field(default_factory=lambda: Amount(count=0))
    min_requests: int = Field(default=0, ge=0, le=INT64_MAX)
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    max_p99_ms: float | None = Field(default=None, gt=0, le=MAX_DURATION_S * 1000)
    max_p99_ratio: float | None = Field(default=None, gt=0, le=MAX_RATIO)
    on_fail: OnFail = OnFail.ABORT

    @property
    def watches_telemetry(self) -> bool:
        return self.min_requests > 0 or any(
            v is not None for v in (self.max_error_rate, self.max_p99_ms, self.max_p99_ratio)
        )


class StrategySpec(_Spec):
    type: StrategyType = StrategyType.ALL_AT_ONCE
    canary: CanarySpec | None = None
    waves: tuple[Amount, ...] = ()

    @model_validator(mode="after")
    def _shape(self) -> StrategySpec:
        if self.type is StrategyType.ALL_AT_ONCE and (self.canary is not None or self.waves):
            raise ValueError("all-at-once takes no canary or waves")
        if self.type is StrategyType.CANARY and self.canary is None:
            raise ValueError("canary needs canary: {count} or {percent}")
        percents = sum(float(w.percent) for w in self.waves if w.percent is not None)
        if percents > 100 + 1e-9:
            raise ValueError(f"waves sum to {percents:g}%, over 100%")
        return self


class RolloutRequest(_Spec):
    model: Name
    version: int = Field(ge=1, le=INT64_MAX)
    selector: SelectorIn = Field(default_factory=SelectorIn)
    kind: str | None = Field(
        default=None, pattern=r"^(onnx|onnx-fp16|onnx-int8-qdq|tensorrt-plan)$", description="Only this artifact kind."
    )
    precision: str | None = Field(default=None, pattern=r"^(fp32|fp16|int8)$", description="Only this precision.")
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    bake_s: float = Field(default=0, ge=0, le=MAX_DURATION_S)
    max_unavailable: Amount | None = None
    maintenance_window: MaintenanceWindow | None = None
    device_deadline_s: float = Field(default=300, gt=0, le=MAX_DURATION_S)
    gates: GateSpec = Field(default_factory=GateSpec)
    step_gates: dict[str, GateSpec] = Field(default_factory=dict)

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy_shorthand(cls, value: object) -> object:
        """`"strategy": "all-at-once"` (the 0.1 API) still means `{"type": "all-at-once"}`."""
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _gates_need_a_bake(self) -> RolloutRequest:
        named = [("gates", self.gates), *((f"step_gates.{k}", g) for k, g in self.step_gates.items())]
        for where, gate in named:
            if gate.min_requests > 0 and self.bake_s <= 0:
                raise ValueError(f"{where}.min_requests needs bake_s > 0 (requests are counted during the bake)")
        return self

    @property
    def watches_telemetry(self) -> bool:
        """Whether any gate judges telemetry (otherwise the executor never reads it)."""
        return self.gates.watches_telemetry or any(g.watches_telemetry for g in self.step_gates.values())

    def gate_for(self, step: str) -> GateSpec:
        return self.step_gates.get(step, self.gates)
