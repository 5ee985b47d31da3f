"""Device selectors: `site=factory-a,gpu_class=cpu-x86_64` -> labels + optional GPU class, and matching.

Pure: parsing refuses malformed text with a reason; matching is a predicate over values already loaded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")


class SelectorError(ValueError):
    """A selector that cannot be parsed; the text says which part."""


@dataclass(frozen=True)
class Selector:
    labels: Mapping[str, str] = field(default_factory=dict)
    gpu_class: str | None = None

    def matches(self, labels: Mapping[str, str], gpu_class: str | None) -> bool:
        if self.gpu_class is not None and gpu_class != self.gpu_class:
            return False
        return all(labels.get(key) == value for key, value in self.labels.items())

    def as_dict(self) -> dict[str, object]:
        return {"labels": dict(self.labels), "gpu_class": self.gpu_class}

    def as_text(self) -> str | None:
        """The `k=v,gpu_class=C` text `parse_selector` reads back; None when it selects every device."""
        parts = [f"{key}={value}" for key, value in self.labels.items()]
        if self.gpu_class is not None:
            parts.append(f"gpu_class={self.gpu_class}")
        return ",".join(parts) or None


def parse_selector(text: str | None) -> Selector:
    """`k=v,k2=v2`; the key `gpu_class` selects the GPU class. Empty or None selects every device."""
    if text is None or not text.strip():
        return Selector()
    labels: dict[str, str] = {}
    gpu_class: str | None = None
    for part in text.split(","):
        if not part.strip():
            continue  # "a=1,,b=2" and a trailing comma are harmless
        key, sep, value = part.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise SelectorError(f"selector part {part.strip()!r} must look like key=value")
        if not _KEY.fullmatch(key):
            raise SelectorError(f"selector key {key!r} is not a valid label key")
        if key == "gpu_class":
            gpu_class = value
        elif key in labels and labels[key] != value:
            raise SelectorError(f"selector gives {key!r} twice with different values")
        else:
            labels[key] = value
    return Selector(labels=labels, gpu_class=gpu_class)
