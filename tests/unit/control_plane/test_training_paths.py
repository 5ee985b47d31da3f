"""Training entrypoints and data come only from the operator's roots: the pure decision, then the lookup on a real
folder tree (symlinks, folders, files of the wrong kind), then the settings that name the roots."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from pydantic import ValidationError

from control_plane.domain.errors import InvalidInput
from control_plane.domain.training_paths import (
    DATA,
    ENTRYPOINT,
    Confinement,
    Observation,
    PathKind,
    choose,
    no_roots,
    relative_path,
)
from control_plane.services.training_paths import locate
from control_plane.settings import ServerSettings

REFUSED = "is not a Python source file (.py) in any root of training.code_dirs"


@pytest.mark.parametrize(
    ("rule", "text", "reason"),
    [
        pytest.param(ENTRYPOINT, "/etc/passwd.py", "absolute paths are refused", id="absolute"),
        pytest.param(ENTRYPOINT, "~root/x.py", "absolute paths are refused", id="home"),
        pytest.param(ENTRYPOINT, "../artifacts/ab/abcd.py", "'..' is refused", id="dotdot-first"),
        pytest.param(ENTRYPOINT, "demo/../../x.py", "'..' is refused", id="dotdot-inside"),
        pytest.param(ENTRYPOINT, "demo/train.py\x00.txt", "control characters", id="nul"),
        pytest.param(ENTRYPOINT, ".", "names no file", id="dot"),
        pytest.param(ENTRYPOINT, "demo/model.onnx", "must name a .py file", id="not-py"),
        pytest.param(ENTRYPOINT, "demo", "must name a .py file", id="folder-name"),
        pytest.param(DATA, "/srv/data", "absolute paths are refused", id="data-absolute"),
        pytest.param(DATA, "../secrets", "'..' is refused", id="data-dotdot"),
    ],
)
def test_path_text_that_could_leave_a_root_is_refused_without_echoing_it(
    rule: Confinement, text: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        relative_path(rule, text)
    message = str(caught.value)
    assert message.startswith(f"{rule.field} must be a path relative to a {rule.root_noun} ({rule.setting})")
    assert reason in message
    if "/" in text:
        assert text not in message  # never echoes a path that may name something outside the roots


@pytest.mark.parametrize(
    ("rule", "text", "expected"),
    [
        pytest.param(ENTRYPOINT, "demo_model/train.py", "demo_model/train.py", id="nested"),
        pytest.param(ENTRYPOINT, "./demo_model//train.py", "demo_model/train.py", id="normalised"),
        pytest.param(DATA, "blobs", "blobs", id="data-folder"),
    ],
)
def test_relative_paths_are_accepted(rule: Confinement, text: str, expected: str) -> None:
    assert relative_path(rule, text) == PurePosixPath(expected)


ROOT = Path("/srv/code")


@pytest.mark.parametrize(
    ("seen", "chosen"),
    [
        pytest.param([Observation(ROOT, ROOT / "a/t.py", PathKind.FILE)], ROOT / "a/t.py", id="file-in-root"),
        pytest.param(
            [
                Observation(Path("/srv/old"), Path("/srv/old/a/t.py"), PathKind.MISSING),
                Observation(ROOT, ROOT / "a/t.py", PathKind.FILE),
            ],
            ROOT / "a/t.py",
            id="second-root",
        ),
        pytest.param([Observation(ROOT, Path("/etc/passwd.py"), PathKind.FILE)], None, id="symlink-escapes"),
        pytest.param([Observation(ROOT, ROOT / "a/t.py", PathKind.DIRECTORY)], None, id="folder"),
        pytest.param([Observation(ROOT, ROOT / "a/t.py", PathKind.OTHER)], None, id="fifo"),
        pytest.param([Observation(ROOT, ROOT / "a/t.py", PathKind.MISSING)], None, id="missing"),
        pytest.param([Observation(ROOT, ROOT / "a/model.onnx", PathKind.FILE)], None, id="symlink-to-non-py"),
        pytest.param([Observation(Path("code"), Path("code/a/t.py"), PathKind.FILE)], None, id="unresolved-root"),
        pytest.param([], None, id="no-observation"),
    ],
)
def test_only_a_py_file_inside_its_root_is_chosen(seen: list[Observation], chosen: Path | None) -> None:
    if chosen is not None:
        assert choose(ENTRYPOINT, PurePosixPath("a/t.py"), seen) == chosen
        return
    with pytest.raises(InvalidInput) as caught:
        choose(ENTRYPOINT, PurePosixPath("a/t.py"), seen)
    assert str(caught.value) == f"entrypoint 'a/t.py' {REFUSED}"


def test_data_may_be_a_file_or_a_folder_inside_its_root() -> None:
    for kind in (PathKind.FILE, PathKind.DIRECTORY):
        assert choose(DATA, PurePosixPath("d"), [Observation(ROOT, ROOT / "d", kind)]) == ROOT / "d"
    with pytest.raises(InvalidInput, match=r"is not a file or folder in any root of training\.data_dirs"):
        choose(DATA, PurePosixPath("d"), [Observation(ROOT, ROOT, PathKind.DIRECTORY)])


def test_without_roots_the_refusal_names_the_setting() -> None:
    assert "training.code_dirs (EDGE_CP_TRAINING__CODE_DIRS)" in str(no_roots(ENTRYPOINT))
    assert "training.data_dirs (EDGE_CP_TRAINING__DATA_DIRS)" in str(no_roots(DATA))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ (the registered code root) beside outside/ (anything else on the host)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "pkg").mkdir(parents=True)
    outside.mkdir()
    (root / "pkg" / "train.py").write_text("print('ok')\n")
    (root / "pkg" / "model.onnx").write_bytes(b"onnx")
    (root / "pkg" / "folder.py").mkdir()
    (outside / "secret.py").write_text("print('outside')\n")
    (root / "pkg" / "escape.py").symlink_to(outside / "secret.py")
    (root / "pkg" / "dangling.py").symlink_to(outside / "absent.py")
    (root / "pkg" / "alias.py").symlink_to(root / "pkg" / "model.onnx")
    (root / "pkg" / "inside.py").symlink_to(root / "pkg" / "train.py")
    (root / "pkg" / "up").symlink_to(outside)
    (root / "loop.py").symlink_to(root / "loop.py")
    return tmp_path


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("pkg/escape.py", id="symlink-to-existing-outside"),
        pytest.param("pkg/dangling.py", id="symlink-to-missing-outside"),
        pytest.param("pkg/up/secret.py", id="through-symlinked-folder"),
        pytest.param("pkg/folder.py", id="folder"),
        pytest.param("pkg/alias.py", id="symlink-to-non-py"),
        pytest.param("pkg/absent.py", id="missing"),
        pytest.param("loop.py", id="symlink-loop"),
    ],
)
def test_lookup_refuses_everything_but_py_source_in_the_root_alike(tree: Path, text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        locate(ENTRYPOINT, text, [tree / "root"])
    assert str(caught.value) == f"entrypoint {text!r} {REFUSED}"
    assert str(tree) not in str(caught.value)


def test_lookup_finds_source_through_symlinks_that_stay_inside(tree: Path) -> None:
    real = (tree / "root" / "pkg" / "train.py").resolve()
    assert locate(ENTRYPOINT, "pkg/train.py", [tree / "missing-root", tree / "root"]) == real
    assert locate(ENTRYPOINT, "pkg/inside.py", [tree / "root"]) == real


@pytest.mark.parametrize(
    ("training", "message"),
    [
        pytest.param({"code_dirs": ["{data}"]}, "overlaps data_dir", id="code-is-data-dir"),
        pytest.param({"code_dirs": ["{data}/artifacts"]}, "overlaps data_dir", id="code-inside-data-dir"),
        pytest.param({"code_dirs": ["{tmp}"]}, "overlaps data_dir", id="code-holds-data-dir"),
        pytest.param({"data_dirs": ["{data}/artifacts"]}, "overlaps data_dir", id="data-inside-data-dir"),
        pytest.param({"code_dirs": ["{tmp}/absent"]}, "is not a folder", id="code-missing"),
    ],
)
def test_settings_refuse_roots_that_would_expose_uploads(
    tmp_path: Path, training: dict[str, list[str]], message: str
) -> None:
    data = tmp_path / "cp-data"
    (data / "artifacts").mkdir(parents=True)
    values = {k: [v.format(data=data, tmp=tmp_path) for v in vs] for k, vs in training.items()}
    with pytest.raises(ValidationError, match=message):
        ServerSettings(data_dir=data, training=values)


def test_settings_read_the_roots_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "code").mkdir()
    monkeypatch.setenv("EDGE_CP_TRAINING__CODE_DIRS", f'["{tmp_path / "code"}"]')
    settings = ServerSettings(data_dir=tmp_path / "cp-data")
    assert settings.training.code_dirs == [tmp_path / "code"]
    assert settings.training.data_dirs == []
