"""The `edgectl demo` command: run the steps, print the summary, and stop every child it started, unless
`--keep` asks to leave a successful run's stack running (then it prints what to try and how to stop it:
`edgectl demo stop`).

Ctrl-C (SIGINT) and SIGTERM interrupt the run; the children are stopped in a `finally` with further interrupts
held off, so cleanup cannot itself be cut short; a failed or interrupted run is stopped even with `--keep`.
Exit codes: 0 success, 1 a step failed, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from control_plane.cli.client import CliError
from control_plane.cli.demo import fleet
from control_plane.cli.demo.keep import KeptStack, next_steps, stop_kept
from control_plane.cli.demo.processes import Interrupted, Supervisor
from control_plane.cli.demo.progress import Reporter
from control_plane.cli.demo.steps import STEPS, DemoFailure, DemoRun
from control_plane.cli.demo.summary import summary_table

# The demo model ships inside the package (model/: its entrypoint and spec), so an installed edgectl runs the demo
# without the source tree. That folder is also the control plane's one training code root in the demo.
DEFAULT_CODE_DIR = Path(__file__).resolve().parent / "model"
DEFAULT_SPEC = DEFAULT_CODE_DIR / "training.yaml"
EXIT_INTERRUPTED = 130
SUMMARY_WIDTH = 80  # what the demo prints into a file or a pipe reads like an 80-column terminal

demo_app = typer.Typer(
    help="Run the whole product on this machine (broker, control plane, 3 edge agents); `demo stop` ends a --keep run.",
    invoke_without_command=True,
)


def _child_env() -> dict[str, str]:
    """This interpreter's environment minus EDGE_CP_*/EDGE_AGENT_* (the demo writes its own settings files)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_CP_", "EDGE_AGENT_"))}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@demo_app.callback()
def demo(
    ctx: typer.Context,
    workdir: Annotated[
        Path, typer.Option(help="Where logs, data and configs go; wiped at the start of each run.")
    ] = Path(".demo"),
    spec: Annotated[Path, typer.Option(help="Training spec of the model to deploy.")] = DEFAULT_SPEC,
    code_dir: Annotated[
        Path, typer.Option(help="Training code root the control plane runs entrypoints from (the spec's is relative).")
    ] = DEFAULT_CODE_DIR,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the stack running after a successful run; `demo stop` ends it.")
    ] = False,
) -> None:
    """Run the whole product on this machine: broker, control plane, 3 edge agents; train, build, roll out, serve.

    Everything runs on 127.0.0.1 and is stopped at the end (or on Ctrl-C), unless --keep: then it keeps running
    and the next commands to try are printed. Logs: WORKDIR/logs/*.log; the PIDs of the processes started:
    WORKDIR/pids.json.
    """
    if ctx.invoked_subcommand is not None:
        return
    console = Console() if sys.stdout.isatty() else Console(width=SUMMARY_WIDTH)
    started = time.monotonic()
    workdir = fleet.prepare_workdir(workdir)
    supervisor = Supervisor(workdir=workdir, env=_child_env())
    supervisor.gate.install()
    code = 0
    kept: KeptStack | None = None
    try:
        code, kept = _run(console, workdir, supervisor, spec, code_dir)
    except Interrupted as exc:
        console.print(f"[yellow]interrupted ({exc}); stopping everything the demo started[/]")
        code = EXIT_INTERRUPTED
    finally:
        supervisor.gate.ignore()
        if not (keep and code == 0):
            supervisor.stop_all()
        supervisor.gate.restore()
    if code == 0:
        console.print(f"demo finished in {time.monotonic() - started:.1f}s; logs in {workdir / 'logs'}")
    if keep and kept is not None and code == 0:
        for line in next_steps(kept):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


@demo_app.command("stop")
def stop(
    workdir: Annotated[Path, typer.Option(help="The workdir of the `edgectl demo --keep` run.")] = Path(".demo"),
) -> None:
    """Stop what `edgectl demo --keep` left running (the PIDs in WORKDIR/pids.json that are still the demo's)."""
    stopped, skipped = stop_kept(workdir)
    if stopped:
        print(f"stopped {', '.join(stopped)}")
    if skipped:
        print(f"not running (or not the demo's any more): {', '.join(skipped)}")


def _run(
    console: Console, workdir: Path, supervisor: Supervisor, spec: Path, code_dir: Path
) -> tuple[int, KeptStack | None]:
    console.print(f"edgectl demo: workdir {workdir}")
    run_or_failure = _run_steps(console, workdir, supervisor, spec, code_dir)
    if isinstance(run_or_failure, DemoFailure):
        _report_failure(console, supervisor, run_or_failure)
        return 1, None
    console.print(summary_table(run_or_failure.devices, run_or_failure.model, run_or_failure.checks))
    return 0, run_or_failure.kept_stack()


def _run_steps(
    console: Console, workdir: Path, supervisor: Supervisor, spec: Path, code_dir: Path
) -> DemoRun | DemoFailure:
    """Every step in order; the first failure is returned (not raised) once the live status is gone."""
    with Reporter(console) as reporter:
        ports = fleet.allocate_ports(fleet.DEMO_DEVICES)
        run = DemoRun(workdir, supervisor, reporter, ports, spec.resolve(), code_dir.resolve())
        try:
            for step in STEPS:
                step(run)
        except DemoFailure as exc:
            return exc
        except CliError as exc:  # e.g. the server refused a request: still name the step
            return DemoFailure(reporter.step, str(exc), ("control-plane",))
        finally:
            run.api.close()
    return run


def _report_failure(console: Console, supervisor: Supervisor, failure: DemoFailure) -> None:
    console.print(f"[bold red]demo failed[/] at step '{failure.step.value}'")
    console.print(str(failure), highlight=False, markup=False)
    for name in failure.logs:
        child = supervisor.get(name)
        if child is not None:
            title = f"{name} log (tail): {child.log_path}"
            console.print(Panel(child.log_tail(), title=title, title_align="left", border_style="red"))
