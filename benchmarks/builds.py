"""Build benchmark: per artifact kind, build time, size, parity and latency; and our overhead over the bare libraries.

For the demo model's shape (an MLP 8-64-64-3) and a ResNet-18-shaped conv net (1x3x224x224, batch dynamic), each
ONNX kind is built through `model_builds.execute.execute` and, separately, by calling the libraries it wraps
directly (onnxruntime's optimiser, onnxconverter-common, onnxruntime.quantization; plus the same parity and
latency runs). Prints a markdown table of medians over a few repetitions. Not a test.

    .venv/bin/python benchmarks/builds.py [--reps 3] [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxconverter_common import float16
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.build_steps import calibration_feeds
from model_builds.execute import execute
from model_builds.hardware import HostHardware
from model_builds.kinds import NATURAL_PRECISION
from model_builds.onnx_model import save_npz
from model_builds.ort_quantize import FeedsReader
from model_builds.protocol import BuildOptions, BuildSpec, BuildTask, RemoteFile, default_tolerances

KINDS = (ArtifactKind.ONNX, ArtifactKind.ONNX_FP16, ArtifactKind.ONNX_INT8_QDQ)
HOST = HostHardware(gpu_class="cpu-x86_64", arch="x86_64", gpu_present=False)


def export(model: Any, example: Any, path: Path, name: str) -> None:
    import torch

    model.eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        model, (example,), str(path), dynamo=True, external_data=False, input_names=[name],
        output_names=["logits"], dynamic_shapes=({0: batch},),
    )  # fmt: skip


def resnet18() -> Any:
    """ResNet-18 (He et al. 2015): 7x7 stem, 4 stages of 2 basic blocks (64-128-256-512), 1000 classes."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.down(x))

    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def make_models(folder: Path) -> dict[str, tuple[Path, Path]]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    made: dict[str, tuple[Path, Path]] = {}
    specs = {
        "mlp 8-64-64-3": (nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)),
                          torch.randn(16, 8), "x"),
        "resnet-18 224x224": (resnet18(), torch.randn(4, 3, 224, 224), "image"),
    }  # fmt: skip
    for label, (model, example, name) in specs.items():
        stem = folder / label.split()[0]
        source = stem.with_suffix(".onnx")
        export(model, example, source, name)
        inputs = {name: example.numpy()}
        outputs = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, inputs)
        samples = stem.with_suffix(".npz")
        save_npz(samples, inputs, {"logits": outputs[0]})
        made[label] = (source, samples)
    return made


def bare_library_call(kind: ArtifactKind, source: Path, out: Path, inputs: dict[str, np.ndarray]) -> None:
    if kind is ArtifactKind.ONNX:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(out)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    elif kind is ArtifactKind.ONNX_FP16:
        onnx.save(float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(out))
    else:
        quantize_static(
            str(source), str(out), FeedsReader(calibration_feeds(inputs, True)), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )  # fmt: skip


def bare_proof(source: Path, out: Path, inputs: dict[str, np.ndarray], runs: int) -> None:
    """What execute's proof does, with plain onnxruntime: reference run, candidate run, timed runs at 1 and N."""
    cpu = ["CPUExecutionProvider"]
    ort.InferenceSession(str(source), providers=cpu).run(None, inputs)
    session = ort.InferenceSession(str(out), providers=cpu)
    session.run(None, inputs)
    for batch in sorted({1, next(iter(inputs.values())).shape[0]}):
        feeds = {k: v[:batch] for k, v in inputs.items()}
        for _ in range(3 + runs):
            session.run(None, feeds)


@dataclass
class Row:
    model: str
    kind: ArtifactKind
    build_s: list[float]
    ours_s: list[float]
    bare_build_s: list[float]
    bare_total_s: list[float]
    report: dict[str, Any]
    size: int


def bench(label: str, source: Path, samples: Path, kind: ArtifactKind, reps: int, runs: int, work: Path) -> Row:
    precision = NATURAL_PRECISION[kind]
    nowhere = RemoteFile("/", "0" * 64, 1)
    spec = BuildSpec("cpu-x86_64", kind, precision)
    task = BuildTask(
        "bench", "k", "m", 1, spec, BuildOptions(), nowhere, nowhere, None, default_tolerances(precision), 60
    )
    inputs = {k.removeprefix("input:"): v for k, v in np.load(samples).items() if k.startswith("input:")}
    row = Row(label, kind, [], [], [], [], {}, 0)
    for rep in range(reps):
        steps: list[float] = []
        folder = work / f"{source.stem}-{kind.value}-{rep}"
        folder.mkdir()
        start = time.perf_counter()
        product = execute(
            task, source, samples, None, folder, lambda m, f, s=steps: s.append(time.perf_counter()),
            latency_runs=runs, host=HOST,
        )  # fmt: skip
        row.ours_s.append(time.perf_counter() - start)
        row.build_s.append(steps[2] - steps[1])  # from the build step's message to the proof's
        bare = work / f"bare-{source.stem}-{kind.value}-{rep}.onnx"
        start = time.perf_counter()
        bare_library_call(kind, source, bare, inputs)
        row.bare_build_s.append(time.perf_counter() - start)
        bare_proof(source, bare, inputs, runs)
        row.bare_total_s.append(time.perf_counter() - start)
        row.report, row.size = product.report(), product.artifact.stat().st_size
    return row


def table(rows: list[Row]) -> str:
    columns = [
        "model", "kind", "build step s", "bare library call s", "size KiB", "max abs", "cosine", "top-1",
        "p50/p99 ms b=1", "p50/p99 ms b=N", "execute() s", "bare libs + proof s", "ratio",
    ]  # fmt: skip
    head = "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|"
    lines = [head]
    med = statistics.median
    for r in rows:
        out = r.report["parity"]["outputs"][0]
        lat = r.report["latency"]["batches"]
        cells = [
            r.model, r.kind.value, f"{med(r.build_s):.3f}", f"{med(r.bare_build_s):.3f}", f"{r.size / 1024:.0f}",
            f"{out['max_abs']:.2g}", f"{out['cosine']:.6f}", f"{out['top1_agreement']:.2f}",
            *(f"{b['p50_ms']:.3f}/{b['p99_ms']:.3f} (b={b['batch']})" for b in lat[:2]),
            f"{med(r.ours_s):.3f}", f"{med(r.bare_total_s):.3f}", f"{med(r.ours_s) / med(r.bare_total_s):.2f}x",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [
            bench(label, source, samples, kind, args.reps, args.runs, work)
            for label, (source, samples) in make_models(work).items()
            for kind in KINDS
        ]
    print(f"onnxruntime {ort.__version__}, {args.reps} repetitions (medians), {args.runs} latency runs, CPU EP")
    print(table(rows))


if __name__ == "__main__":
    main()
