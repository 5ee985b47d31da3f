"""The model registry: validate an upload for real and store it as an immutable, numbered version; delete a version
or a model nothing uses any more.

A model that keeps its weights in external data files (torch.onnx.export's default) is accepted with those files:
their names are checked before a byte is read, they are received within what the upload limit leaves after the
model, and the sandbox folds them into one self-contained model (`model_builds.external_data`), which is what is
stored; a location is only ever a key into the uploaded files, never a path on this host.

Validation happens before anything is stored: a bad upload is an `InvalidInput` naming the upload's field and
what is wrong, and leaves no version behind. Every step costs bounded work whatever the input: files are streamed
to disk with a size limit (`TooLarge` past it), `.npz` archives are read within size limits checked before
anything is inflated, and the model is parsed, checked and run only in a child process with a wall-clock timeout
and a memory limit (`model_builds.ort_sandbox`). An error text must never name a host path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from control_plane.domain.errors import Conflict, InvalidInput, NotFound, TooLarge
from control_plane.domain.registry import (
    Deletion,
    LineageSource,
    Model,
    ModelVersion,
    NewVersion,
    TensorInfo,
    VersionUsage,
    deletion_refusal,
)
from control_plane.services.ports import Artifacts, Clock, RegistryStore
from edge_agent.protocol.messages import Name, is_sha256
from edge_agent.protocol.validation import describe_error
from edge_agent.protocol.vocabulary import Precision
from model_builds.digests import file_digest
from model_builds.external_data import MAX_FILES, location_refusal
from model_builds.npz import NpzLimits
from model_builds.onnx_model import (
    Arrays,
    InvalidModel,
    ModelSignature,
    load_npz,
    sample_count,
    save_npz,
    split_samples,
    synthesise_inputs,
)
from model_builds.ort_sandbox import EvalLimits, SandboxError, inline_bounded, inspect_bounded, run_bounded
from model_builds.protocol import Tolerances

_NAME = TypeAdapter(Name)


class Lineage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: LineageSource = LineageSource.UPLOAD
    training_job_id: str | None = Field(default=None, max_length=64)
    data_digest: str | None = Field(default=None, max_length=128)
    code_revision: str | None = Field(default=None, max_length=128)
    parameters: dict[str, Any] | None = None
    tool_versions: dict[str, str] | None = None


class UploadMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lineage: Lineage = Field(default_factory=Lineage)
    metrics: dict[str, Any] = Field(default_factory=dict)
    # Parity tolerance overrides per precision, e.g. {"fp16": {"atol": 0.05, "cosine": 0.998}}.
    tolerances: dict[Precision, dict[str, float]] = Field(default_factory=dict)

    @field_validator("tolerances")
    @classmethod
    def _known_tolerances(cls, value: dict[Precision, dict[str, float]]) -> dict[Precision, dict[str, float]]:
        overrides = {p.value: t for p, t in value.items()}
        for precision in value:
            Tolerances.from_overrides(precision, overrides)  # ValueError names an unknown field
        return value


@dataclass(frozen=True)
class CalibrationSet:
    sha256: str
    size: int
    sample_count: int


def validate_name(name: str) -> str:
    try:
        return _NAME.validate_python(name)
    except ValidationError as exc:
        raise InvalidInput(
            f"model name {name!r} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ) from exc


def parse_metadata(text: str | None) -> UploadMetadata:
    if text is None or not text.strip():
        return UploadMetadata()
    try:
        return UploadMetadata.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidInput(f"metadata is not valid: {describe_error(exc.errors()[0])}") from exc


class RegistryService:
    def __init__(
        self,
        store: RegistryStore,
        artifacts: Artifacts,
        clock: Clock,
        max_upload_bytes: int,
        *,
        npz_limits: NpzLimits = NpzLimits(),
        evaluation: EvalLimits = EvalLimits(),
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self._clock = clock
        self._max_upload_bytes = max_upload_bytes
        self._npz_limits = npz_limits
        self._evaluation = evaluation

    # -- queries ----------------------------------------------------------------------------------------------
    def list_models(self) -> list[Model]:
        return self._store.list_models()

    def get_model(self, name: str) -> Model:
        model = self._store.get_model(name)
        if model is None:
            raise NotFound(f"model {name!r} does not exist")
        return model

    def list_versions(self, name: str) -> list[ModelVersion]:
        self.get_model(name)
        return self._store.list_versions(name)

    def get_version(self, name: str, version: int) -> ModelVersion:
        found = self._store.get_version(name, version)
        if found is None:
            self.get_model(name)
            raise NotFound(f"model {name!r} has no version {version}")
        return found

    def samples_file(self, name: str, version: int) -> Path:
        found = self.get_version(name, version)
        path = self._artifacts.path_for(found.samples_sha256)
        if path is None:
            raise NotFound(f"the samples file of {name} v{version} is missing from the artifact store")
        return path

    def artifact_file(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise InvalidInput(f"{sha256!r} is not a sha256 digest (64 lowercase hex characters)")
        path = self._artifacts.path_for(sha256)
        if path is None:
            raise NotFound(f"no artifact {sha256}")
        return path

    # -- deletion ---------------------------------------------------------------------------------------------
    def delete(self, name: str, version: int | None) -> Deletion:
        """Delete a model (version None) or one version with its builds and the artifacts nothing else refers to;
        Conflict naming what still uses it (unfinished rollouts, devices), and then nothing is deleted."""
        what = f"model {name!r}" if version is None else f"{name} v{version}"
        if version is None:
            self.get_model(name)
        else:
            self.get_version(name, version)
        outcome = self._store.delete_unused(name, version)
        if isinstance(outcome, VersionUsage):
            raise Conflict(deletion_refusal(what, outcome) or f"{what} is in use")
        for sha in outcome.artifacts:
            self._artifacts.remove(sha)
        return outcome

    # -- calibration sets -------------------------------------------------------------------------------------
    def add_calibration(self, name: str, version: int, stream: BinaryIO) -> CalibrationSet:
        """Store an int8 calibration set (.npz of the model's inputs, `input:NAME` or plain names), checked
        against the version's inputs; builds name it by the returned sha256."""
        found = self.get_version(name, version)
        source = self._artifacts.path_for(found.source_sha256)
        if source is None:
            raise NotFound(f"the source of {name} v{version} is missing from the artifact store")
        upload, _, _ = self._receive(stream, ".npz", "calibration")
        try:
            signature = self._inspect(source, f"the source of {name} v{version}")
            inputs, _ = split_samples(self._load_npz(upload), signature)
        except InvalidModel as exc:
            raise InvalidInput(f"calibration: {exc}") from exc
        finally:
            upload.unlink(missing_ok=True)
        sha = self._store_samples(inputs, {})
        path = self._artifacts.path_for(sha)
        return CalibrationSet(sha, path.stat().st_size if path else 0, sample_count(inputs))

    # -- registration -----------------------------------------------------------------------------------------
    def register_upload(
        self,
        name: str,
        model: BinaryIO,
        samples: BinaryIO | None,
        metadata_text: str | None,
        external_data: Sequence[tuple[str, BinaryIO]] = (),
    ) -> ModelVersion:
        """Register an uploaded model; `external_data` are the files its tensors name (location, stream), which
        are folded into one self-contained model before anything else looks at it."""
        validate_name(name)
        metadata = parse_metadata(metadata_text)
        metadata.lineage.source = LineageSource.UPLOAD
        locations = _external_locations([location for location, _ in external_data])
        with ExitStack() as cleanup:
            model_path, model_sha, model_size = self._receive(model, ".onnx", "model")
            cleanup.callback(model_path.unlink, missing_ok=True)
            if external_data:
                budget = self._max_upload_bytes - model_size
                files = self._receive_external(zip(locations, (s for _, s in external_data), strict=True), budget)
                for path in files.values():
                    cleanup.callback(path.unlink, missing_ok=True)
                model_path, model_sha, model_size = self._inline(model_path, files)
                cleanup.callback(model_path.unlink, missing_ok=True)
            samples_path: Path | None = None
            if samples is not None:
                samples_path, _, _ = self._receive(samples, ".npz", "samples")
                cleanup.callback(samples_path.unlink, missing_ok=True)
            return self._register(name, model_path, model_sha, model_size, samples_path, metadata)

    def register_files(
        self, name: str, model_path: Path, samples_path: Path | None, lineage: Mapping[str, Any], metrics: Any
    ) -> ModelVersion:
        """Register files already on disk (a training job's output); the originals are left in place."""
        validate_name(name)
        try:
            metadata = UploadMetadata(lineage=Lineage.model_validate(dict(lineage)), metrics=metrics)
        except ValidationError as exc:
            raise InvalidInput(f"lineage/metrics are not valid: {exc.errors()[0]['msg']}") from exc
        with model_path.open("rb") as stream:
            copy, sha, size = self._receive(stream, ".onnx", "model")
        try:
            return self._register(name, copy, sha, size, samples_path, metadata)
        finally:
            copy.unlink(missing_ok=True)

    def _receive_external(self, uploads: Iterable[tuple[str, BinaryIO]], budget: int) -> dict[str, Path]:
        """Each external data file streamed to the store's temp area, all of them together within `budget` (what
        the upload limit leaves after the model); on a refusal nothing received stays behind."""
        files: dict[str, Path] = {}
        try:
            for location, stream in uploads:
                what = f"external data {location!r}"
                if budget <= 0:
                    raise TooLarge(f"{what}: the model and its external data exceed the upload limit")
                path, _, size = self._receive(stream, ".data", what, limit=budget)
                files[location] = path
                budget -= size
        except BaseException:
            for path in files.values():
                path.unlink(missing_ok=True)
            raise
        return files

    def _inline(self, model_path: Path, files: Mapping[str, Path]) -> tuple[Path, str, int]:
        """One self-contained model from the model and its external data (in the sandbox: it parses the upload)."""
        destination = self._artifacts.temp_path(".onnx")
        limits = self._evaluation
        try:
            inline_bounded(model_path, files, destination, timeout_s=limits.timeout_s, memory_bytes=limits.memory_bytes)
        except SandboxError as exc:
            destination.unlink(missing_ok=True)
            raise InvalidInput(f"model: {exc.reason}") from exc
        sha, size = file_digest(destination)
        return destination, sha, size

    def _receive(self, stream: BinaryIO, suffix: str, what: str, limit: int | None = None) -> tuple[Path, str, int]:
        try:
            path, sha, size = self._artifacts.receive(stream, limit or self._max_upload_bytes, suffix)
        except ValueError as exc:  # ArtifactTooLarge: the partial copy is already gone
            raise TooLarge(f"{what}: {exc}") from exc
        if size == 0:
            path.unlink(missing_ok=True)
            raise InvalidInput(f"{what}: the uploaded file is empty")
        return path, sha, size

    def _register(
        self,
        name: str,
        model_path: Path,
        model_sha: str,
        model_size: int,
        samples_path: Path | None,
        metadata: UploadMetadata,
    ) -> ModelVersion:
        signature = self._inspect(model_path, "model")
        try:
            inputs, outputs, synthesised = self._sample_arrays(signature, samples_path, model_sha)
        except InvalidModel as exc:
            raise InvalidInput(str(exc)) from exc
        computed = not outputs
        if computed:
            outputs = self._reference_outputs(model_path, inputs)
        samples_sha = self._store_samples(inputs, outputs)
        self._artifacts.adopt(model_path, model_sha)
        return self._store.add_version(
            NewVersion(
                model=name,
                created_at=self._clock(),
                source_sha256=model_sha,
                source_size=model_size,
                inputs=_infos(signature.inputs),
                outputs=_infos(signature.outputs),
                samples_sha256=samples_sha,
                sample_count=sample_count(inputs),
                samples_synthesised=synthesised,
                reference_outputs_computed=computed,
                lineage=metadata.lineage.model_dump(mode="json", exclude_none=True),
                metrics=metadata.metrics,
                tolerances={p.value: dict(t) for p, t in metadata.tolerances.items()},
            )
        )

    def _sample_arrays(
        self, signature: ModelSignature, samples_path: Path | None, seed: str
    ) -> tuple[Arrays, Arrays, bool]:
        if samples_path is None:
            return synthesise_inputs(signature, seed), {}, True
        try:
            arrays = self._load_npz(samples_path)
        except InvalidModel as exc:
            raise InvalidModel(f"samples: {exc}") from exc
        inputs, outputs = split_samples(arrays, signature)
        return inputs, outputs, False

    def _load_npz(self, path: Path) -> Arrays:
        return load_npz(path, self._npz_limits)

    def _inspect(self, model_path: Path, what: str) -> ModelSignature:
        """Parse and check the model in the sandbox: a huge or hostile file costs the child, not this process."""
        limits = self._evaluation
        try:
            return inspect_bounded(model_path, timeout_s=limits.timeout_s, memory_bytes=limits.memory_bytes)
        except SandboxError as exc:
            raise InvalidInput(f"{what}: {exc.reason}") from exc

    def _reference_outputs(self, model_path: Path, inputs: Arrays) -> Arrays:
        limits = self._evaluation
        try:
            return run_bounded(model_path, inputs, timeout_s=limits.timeout_s, memory_bytes=limits.memory_bytes)
        except SandboxError as exc:
            raise InvalidInput(f"model: computing reference outputs on the samples failed: {exc.reason}") from exc

    def _store_samples(self, inputs: Arrays, outputs: Arrays) -> str:
        """Written once, in the store's temp area, and that very file adopted under its digest (no second copy)."""
        temp = self._artifacts.temp_path(".npz")
        try:
            save_npz(temp, inputs, outputs)
            sha, _ = file_digest(temp)
            self._artifacts.adopt(temp, sha)
            return sha
        finally:
            temp.unlink(missing_ok=True)


def _external_locations(locations: list[str]) -> list[str]:
    """The uploaded external data files' names, checked before a byte of them is read: each a relative path next to
    the model (no '..', no absolute path), no name twice, at most `MAX_FILES`."""
    if len(locations) > MAX_FILES:
        raise InvalidInput(f"external_data: at most {MAX_FILES} files, got {len(locations)}")
    for location in locations:
        refusal = location_refusal(location)
        if refusal is not None:
            raise InvalidInput(f"external_data: the file name {location[:300]!r} {refusal}")
    twice = sorted({loc for loc in locations if locations.count(loc) > 1})
    if twice:
        raise InvalidInput(f"external_data: {twice} uploaded more than once")
    return locations


def _infos(specs: Any) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(name=s.name, shape=tuple(s.shape), dtype=s.dtype) for s in specs)
