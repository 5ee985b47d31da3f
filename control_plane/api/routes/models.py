"""Models and versions: list, show, upload (multipart, with the model's external data files), delete, and the
samples file of a version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import FileResponse

from control_plane.api.deps import RegistryDep
from control_plane.api.params import Version
from control_plane.api.schemas.models import DeletionOut, ModelOut, VersionOut
from control_plane.domain.registry import Deletion

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(registry: RegistryDep) -> list[ModelOut]:
    return [ModelOut.model_validate(m) for m in registry.list_models()]


@router.get("/{name}")
def get_model(name: str, registry: RegistryDep) -> ModelOut:
    return ModelOut.model_validate(registry.get_model(name))


@router.post("/{name}/versions", status_code=201)
def upload_version(
    name: str,
    registry: RegistryDep,
    model: Annotated[UploadFile, File(description="The ONNX model (.onnx).")],
    samples: Annotated[UploadFile | None, File(description="Sample inputs/outputs (.npz).")] = None,
    metadata: Annotated[str | None, Form(description='JSON: {"lineage": {...}, "metrics": {...}}')] = None,
    external_data: Annotated[
        list[UploadFile] | None,
        File(
            description="The model's external data files (repeat), each with the file name the model's tensors "
            "give as their location (e.g. `model.onnx.data`); stored folded into one self-contained model."
        ),
    ] = None,
) -> VersionOut:
    extra = [(f.filename or "", f.file) for f in external_data or []]
    version = registry.register_upload(name, model.file, samples.file if samples else None, metadata, extra)
    return VersionOut.model_validate(version)


@router.delete("/{name}")
def delete_model(name: str, registry: RegistryDep) -> DeletionOut:
    """Delete a model: every version, its builds and their artifacts; 409 naming the unfinished rollouts and the
    devices that still use one of its versions."""
    return _deletion_out(registry.delete(name, None))


@router.delete("/{name}/versions/{version}")
def delete_version(name: str, version: Version, registry: RegistryDep) -> DeletionOut:
    """Delete one version with its builds and their artifacts; 409 while a rollout or a device uses it."""
    return _deletion_out(registry.delete(name, version))


def _deletion_out(deleted: Deletion) -> DeletionOut:
    return DeletionOut(
        model=deleted.model,
        version=deleted.version,
        versions=deleted.versions,
        builds=deleted.builds,
        artifacts=len(deleted.artifacts),
        finished_rollouts=deleted.finished_rollouts,
    )


@router.get("/{name}/versions")
def list_versions(name: str, registry: RegistryDep) -> list[VersionOut]:
    return [VersionOut.model_validate(v) for v in registry.list_versions(name)]


@router.get("/{name}/versions/{version}")
def get_version(name: str, version: Version, registry: RegistryDep) -> VersionOut:
    return VersionOut.model_validate(registry.get_version(name, version))


@router.get("/{name}/versions/{version}/samples", response_class=FileResponse)
def get_samples(name: str, version: Version, registry: RegistryDep) -> FileResponse:
    path = registry.samples_file(name, version)
    return FileResponse(path, media_type="application/octet-stream", filename=f"{name}-v{version}-samples.npz")
