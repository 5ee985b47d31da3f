"""Demo training entrypoint: a small PyTorch MLP classifier on deterministic synthetic data, exported to ONNX.

It follows the training entrypoint contract of docs/api.md:
    python train.py --output-dir DIR --params-json '{"epochs": 8, ...}'
and writes DIR/model.onnx (one self-contained file, dynamic batch), DIR/samples.npz (`input:input`, 8 rows) and
DIR/metrics.json (accuracy, loss, tool versions, data digest). It must never download anything or depend on the
machine it runs on: the data is generated from a seed, so the same parameters give the same data digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SAMPLE_ROWS = 8


@dataclass(frozen=True)
class Params:
    epochs: int = 8
    samples: int = 1500
    features: int = 8
    classes: int = 3
    hidden: int = 32
    learning_rate: float = 0.01
    batch_size: int = 64
    seed: int = 7

    @classmethod
    def from_json(cls, text: str) -> Params:
        raw = json.loads(text or "{}")
        if not isinstance(raw, dict):
            raise ValueError("--params-json must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; known: {sorted(known)}")
        defaults = cls()
        values = {k: type(getattr(defaults, k))(v) for k, v in raw.items()}
        return cls(**{**asdict(defaults), **values})


def make_dataset(p: Params) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, one per class, around seeded centres: features float32 [N, F], labels int64 [N]."""
    rng = np.random.default_rng(p.seed)
    centres = rng.normal(0.0, 1.2, size=(p.classes, p.features))
    labels = rng.integers(0, p.classes, size=p.samples)
    features = centres[labels] + rng.normal(0.0, 1.0, size=(p.samples, p.features))
    return features.astype(np.float32), labels.astype(np.int64)


def data_digest(features: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(features.tobytes() + labels.tobytes()).hexdigest()


def build_model(p: Params) -> nn.Module:
    return nn.Sequential(
        nn.Linear(p.features, p.hidden),
        nn.ReLU(),
        nn.Linear(p.hidden, p.hidden),
        nn.ReLU(),
        nn.Linear(p.hidden, p.classes),
    )


def train(model: nn.Module, features: np.ndarray, labels: np.ndarray, p: Params) -> tuple[float, float]:
    """Mini-batch Adam; prints one progress line per epoch; returns (final loss, accuracy)."""
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=p.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(p.seed)
    loss_value = float("nan")
    for epoch in range(1, p.epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), p.batch_size):
            batch = order[start : start + p.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
        loss_value, accuracy = evaluate(model, x, y, loss_fn)
        print(f"epoch {epoch}/{p.epochs} loss={loss_value:.4f} accuracy={accuracy:.3f}", flush=True)
    return loss_value, accuracy


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        return float(loss_fn(logits, y)), float((logits.argmax(dim=1) == y).float().mean())


def export_onnx(model: nn.Module, features: int, path: Path) -> None:
    """One self-contained .onnx file (no external data) with a dynamic batch dimension."""
    model.eval()
    example = torch.zeros(2, features, dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
        )
    except Exception as exc:  # any exporter failure: say so plainly, the job fails with this line
        raise SystemExit(f"ONNX export failed ({type(exc).__name__}): {exc}") from exc
    stray = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]
    if stray:
        raise SystemExit(f"ONNX export wrote external data files {stray}; expected one self-contained file")


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxscript

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "numpy": np.__version__,
    }


def run(output_dir: Path, p: Params) -> dict[str, Any]:
    torch.manual_seed(p.seed)
    torch.set_num_threads(2)
    output_dir.mkdir(parents=True, exist_ok=True)
    features, labels = make_dataset(p)
    digest = data_digest(features, labels)
    print(f"dataset: {p.samples} samples, {p.features} features, {p.classes} classes, sha256 {digest[:12]}")
    model = build_model(p)
    loss, accuracy = train(model, features, labels, p)
    export_onnx(model, p.features, output_dir / "model.onnx")
    np.savez(output_dir / "samples.npz", **{"input:input": features[:SAMPLE_ROWS]})  # type: ignore[arg-type]
    metrics = {
        "accuracy": accuracy,
        "loss": loss,
        "epochs": p.epochs,
        "data_digest": digest,
        "parameters": asdict(p),
        "tool_versions": tool_versions(),
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"exported {output_dir / 'model.onnx'} (accuracy {accuracy:.3f})", flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, required=True, help="where to write model.onnx etc.")
    parser.add_argument("--params-json", default="{}", help="JSON object of parameters (see Params)")
    args = parser.parse_args(argv)
    try:
        params = Params.from_json(args.params_json)
    except (ValueError, TypeError) as exc:
        print(f"bad parameters: {exc}", file=sys.stderr)
        return 2
    run(args.output_dir, params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
