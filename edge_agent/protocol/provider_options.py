"""The one resolver of a GPU class's onnxruntime provider options, shared by the control plane and the agent.

A class file (model_builds/targets/*.yaml) holds provider options as templates. They are made concrete in two
steps of one path, both here so the two sides can never disagree:

- the control plane, composing a device's desired state (`for_device`): the hardware placeholders `{gpu_class}`,
  `{compute_capability}`, `{tensorrt_version}` are filled from the device's reported hardware ("none" where not
  reported), `{data_dir}` stays for the agent, and the TensorRT EP's precision flags follow the artifact's
  precision: `trt_fp16_enable` is "true" for an fp16 artifact only, `trt_int8_enable` for an int8 artifact only,
  and each only where the class's options name the flag (an fp32 artifact is never run in fp16 behind the
  operator's back);
- the agent, loading the artifact (`on_device`): `{data_dir}` and any hardware placeholder left are filled from
  this device, and an engine or timing cache directory is always keyed by this device's hardware (a path template
  without all three hardware placeholders gets a hardware-named subdirectory), so a cache written on other
  hardware is never deserialised here.

Pure: it never touches the file system or the host. It must never import anything of the project but the wire
contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from edge_agent.protocol.messages import HardwareFacts
from edge_agent.protocol.vocabulary import ExecutionProvider, Precision

# Options naming a directory that holds hardware-specific files (engines, timing caches).
CACHE_DIR_OPTIONS = ("trt_engine_cache_path", "trt_timing_cache_path")
HARDWARE_PLACEHOLDERS = ("{gpu_class}", "{compute_capability}", "{tensorrt_version}")
# The TensorRT EP flag each precision turns on (and every other precision off).
PRECISION_FLAGS = {"trt_fp16_enable": Precision.FP16, "trt_int8_enable": Precision.INT8}

ProviderOptions = Mapping[ExecutionProvider, Mapping[str, str]]
_Provider = TypeVar("_Provider", bound=str)


def hardware_values(gpu_class: str, compute_capability: str | None, tensorrt_version: str | None) -> dict[str, str]:
    """What each hardware placeholder stands for ("none" for what is unknown or absent)."""
    return {
        "{gpu_class}": gpu_class,
        "{compute_capability}": compute_capability or "none",
        "{tensorrt_version}": tensorrt_version or "none",
    }


def fill(template: str, values: Mapping[str, str]) -> str:
    """`template` with each placeholder of `values` (spelled with its braces) replaced; nothing else touched."""
    for placeholder, value in values.items():
        template = template.replace(placeholder, value)
    return template


def with_precision_flags(
    provider: ExecutionProvider, options: Mapping[str, str], precision: Precision
) -> dict[str, str]:
    """The TensorRT EP's precision flags set by the artifact's precision, where the options name them."""
    out = dict(options)
    if provider == ExecutionProvider.TENSORRT:
        for flag, on_for in PRECISION_FLAGS.items():
            if flag in out:
                out[flag] = "true" if precision == on_for else "false"
    return out


def for_device(
    options: ProviderOptions, gpu_class: str, facts: HardwareFacts | None, precision: Precision
) -> dict[ExecutionProvider, dict[str, str]]:
    """The control plane's step: a class's options for one device and one artifact (see the module docstring)."""
    values = hardware_values(
        gpu_class, facts.compute_capability if facts else None, facts.tensorrt_version if facts else None
    )
    return {
        provider: with_precision_flags(provider, {k: fill(v, values) for k, v in settings.items()}, precision)
        for provider, settings in options.items()
    }


def hardware_tag(facts: HardwareFacts) -> str:
    """A directory name that differs whenever the hardware an engine depends on differs."""
    cc = f"sm{facts.compute_capability.replace('.', '')}" if facts.compute_capability else "nogpu"
    return f"{facts.gpu_class}-{cc}-trt{facts.tensorrt_version or 'none'}"


def on_device_option(name: str, value: str, data_dir: Path, facts: HardwareFacts) -> str:
    """The agent's step for one option: placeholders filled; cache directories always end up hardware-keyed."""
    keyed = all(placeholder in value for placeholder in HARDWARE_PLACEHOLDERS)
    values = {"{data_dir}": str(data_dir)} | hardware_values(
        facts.gpu_class, facts.compute_capability, facts.tensorrt_version
    )
    resolved = fill(value, values)
    if name not in CACHE_DIR_OPTIONS:
        return resolved
    path = data_dir / resolved  # a relative cache path lives in the data directory; an absolute one stays
    return str(path if keyed else path / hardware_tag(facts))


def on_device(
    options: Mapping[_Provider, Mapping[str, str]], data_dir: Path, facts: HardwareFacts
) -> dict[_Provider, dict[str, str]]:
    """The agent's step: every provider's options with `{data_dir}` and the hardware placeholders substituted."""
    return {
        provider: {name: on_device_option(name, value, data_dir, facts) for name, value in values.items()}
        for provider, values in options.items()
    }
