"""The project installed as a user installs it: the built wheel, in a fresh virtualenv that cannot see this checkout.

An editable install reads everything from the source tree, so a file the package forgets to ship (the demo's model,
the GPU-class catalog, the database migrations) goes unnoticed until a user runs the wheel. Here the wheel is built
from a copy of the sources, installed with `pip install --no-deps` into a new virtualenv whose only window on the
dependencies is a `.pth` line naming this interpreter's site-packages (where the editable install is only a finder
that a path line never activates), and `edgectl` and `edge-agent` run from a directory outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from tests.support import python_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SOURCES = ("pyproject.toml", "README.md", "control_plane", "edge_agent", "model_builds")
PACKAGES = ("control_plane", "edge_agent", "model_builds")


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a clean copy of the sources (no build/ or egg-info left over from this checkout)."""
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp / "dist"
    args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    result = _run(args, cwd=tmp, env=python_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("edge_orchestrator-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A virtualenv with the wheel installed; its dependencies come from this interpreter's site-packages."""
    venv = tmp / "venv"
    result = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=python_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    result = _run(install, cwd=tmp, env=python_env(), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    deps = Path(sysconfig.get_paths()["purelib"])
    assert not any((deps / package).exists() for package in PACKAGES), f"{deps} holds a copy of the project"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp, env=_user_env(venv), timeout=30).stdout.strip())  # fmt: skip
    (site / "dependencies-of-the-test.pth").write_text(f"{deps}\n")
    return venv


def _user_env(venv: Path) -> dict[str, str]:
    """The tests' environment with the new virtualenv's bin first and nothing that points into the checkout."""
    env = python_env()
    env.pop("PYTHONPATH", None)
    ours = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *(p for p in env["PATH"].split(os.pathsep) if p != ours)])
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    return _fresh_venv(tmp, _build_wheel(tmp))


def test_the_project_is_imported_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    code = f"import sys, {', '.join(PACKAGES)}; print(*(sys.modules[p].__file__ for p in {PACKAGES!r}))"
    result = _run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path, env=_user_env(installed), timeout=60)
    assert result.returncode == 0, result.stderr
    files = [Path(f) for f in result.stdout.split()]
    assert len(files) == len(PACKAGES)
    assert all(installed in f.parents for f in files), files
    assert all(REPO not in f.parents for f in files), files


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param(["edgectl", "--help"], "demo", id="edgectl"),
        pytest.param(["edgectl", "server", "--help"], "--config", id="edgectl-server"),
        pytest.param(["edge-agent", "--help"], "apply", id="edge-agent"),
    ],
)
def test_the_commands_run_from_the_installed_wheel(
    installed: Path, tmp_path: Path, command: list[str], expected: str
) -> None:
    args = [str(installed / "bin" / command[0]), *command[1:]]
    result = _run(args, cwd=tmp_path, env=_user_env(installed) | {"COLUMNS": "200"}, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout


def test_the_demo_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """The whole demo: the installed package brings its model, the GPU-class catalog and the migrations."""
    started = time.monotonic()
    args = [str(installed / "bin" / "edgectl"), "demo", "--workdir", str(tmp_path / "demo")]
    result = _run(args, cwd=tmp_path, env=_user_env(installed), timeout=240)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "cannot read" not in out
    for device in ("dev-1", "dev-2", "dev-3"):
        assert device in result.stdout
    assert "demo finished in" in result.stdout, out
    assert time.monotonic() - started < 240


def test_the_installed_control_plane_runs_the_playbooks_it_ships(installed: Path, tmp_path: Path) -> None:
    """The Ansible channel's playbooks and role come with the package: the default `ansible.playbooks_dir` of an
    installed control plane holds them, inside the virtualenv, the same files as the repository's playbooks/."""
    code = "from control_plane.settings import AnsibleSettings; print(AnsibleSettings().playbooks_dir)"
    result = _run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path, env=_user_env(installed), timeout=60)
    assert result.returncode == 0, result.stderr
    shipped = Path(result.stdout.strip())
    assert installed in shipped.parents, shipped
    assert _files(shipped) == _files(REPO / "playbooks") - {Path(".ansible-lint")}


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
