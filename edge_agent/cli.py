"""`edge-agent`: the device daemon's command line (run, enroll, apply, facts, status, config-help).

Settings are loaded once here and passed down. Bad input (config, desired file) ends with a clear message and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_agent.config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_config, settings_help
from edge_agent.protocol import DesiredState, SignedDesiredState

app = typer.Typer(
    help="Edge agent: keeps this device serving the model versions the control plane assigns.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Agent YAML config (EDGE_AGENT_* environment overrides it).")
]
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _config(path: Path) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command(epilog="Run `edge-agent config-help` for every setting.\n\n" + settings_help().replace("\n", "\n\n"))
def run(
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the daemon: serve the last-known-good models, follow the desired state over MQTT, report."""
    settings = _config(config)
    _logging(log_level)
    from edge_agent.daemon import Daemon  # deferred: loads onnxruntime, uvicorn and paho

    Daemon(settings).run()


@app.command("config-help")
def config_help() -> None:
    """Print every setting with its default and description."""
    typer.echo(settings_help())


@app.command()
def apply(
    desired: Annotated[Path, typer.Option(help="Signed desired-state JSON (or its MQTT envelope).")],
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    artifact_dir: Annotated[
        Path | None, typer.Option(help="Directory of artifacts named by sha256; used instead of downloading.")
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(
            help="After the apply, delete the files of --artifact-dir the document does not name (the push "
            "directory then holds one generation's artifacts, not every one ever pushed)."
        ),
    ] = False,
    lock_timeout_s: Annotated[float, typer.Option(help="Wait this long for a running apply.")] = 600,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Apply a desired state once (the Ansible push channel): same verification and apply path as the daemon.

    Exit 0 when applied or already applied; 1 when refused or failed (reason printed); 2 for unusable input.
    `--json` prints {ok, changed, generation, reason, reported}: `reported` is the ReportedState the agent would
    publish over MQTT, which the control plane stores for devices on the Ansible channel.
    """
    settings = _config(config)
    _logging("warning")
    from edge_agent.adapters.lockfile import apply_lock
    from edge_agent.core.errors import AgentError
    from edge_agent.core.reconcile import DecisionKind
    from edge_agent.daemon import build_core, detect, parse_desired
    from edge_agent.protocol import ProtocolError
    from edge_agent.protocol.vocabulary import Channel

    try:
        signed = parse_desired(desired.read_bytes())
    except (OSError, ProtocolError) as exc:
        typer.echo(f"error: cannot use desired-state file {desired}: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    core = build_core(settings, detect(settings), Channel.ANSIBLE, artifact_dir=artifact_dir)
    try:
        with apply_lock(settings.data_dir, timeout_s=lock_timeout_s):
            core.recover(load_models=False)
            result = core.handle(signed)
    except AgentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    if prune and artifact_dir is not None:
        _prune(artifact_dir, signed)
    # A generation that failed before is skipped by the agent (ok, nothing to do) but is still not applied: for
    # a push it is a failure, so that re-running a playbook with a refused document fails the host again.
    ok = result.ok and core.state.applied_generation >= result.generation
    changed = ok and result.outcome is DecisionKind.APPLY
    if as_json:
        reported = core.reported(from_journal=True).model_dump(mode="json")
        summary = {"ok": ok, "changed": changed, "generation": result.generation, "reason": result.reason}
        typer.echo(json.dumps({**summary, "reported": reported}))
    elif ok:
        typer.echo(f"generation {result.generation}: " + ("applied" if changed else f"unchanged ({result.reason})"))
    else:
        typer.echo(f"generation {result.generation} not applied: {result.reason}", err=True)
    raise typer.Exit(0 if ok else EXIT_FAILED)


def _prune(artifact_dir: Path, signed: SignedDesiredState) -> None:
    """Keep only the artifacts the document names (by sha256 file name); never fails the apply."""
    try:
        document = DesiredState.model_validate_json(signed.document)
    except ValueError:
        return  # an unusable document was refused by the apply; nothing is known to be stale
    named = {ref.sha256 for ref in document.artifact_refs()}
    for path in artifact_dir.iterdir() if artifact_dir.is_dir() else ():
        if path.is_file() and path.name not in named:
            path.unlink(missing_ok=True)


EXIT_DENIED = 3


@app.command()
def enroll(
    url: Annotated[str, typer.Option(help="The control plane's base URL, e.g. https://cp.example:8080.")],
    token: Annotated[
        str | None,
        typer.Option(envvar="EDGE_AGENT_ENROLL_TOKEN", help="Enrollment token (better: the environment variable)."),
    ] = None,
    device_id: Annotated[str | None, typer.Option(help="Device id to ask for; default: derived from the key.")] = None,
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    ca_file: Annotated[Path | None, typer.Option(help="CA (PEM) of an https:// control plane.")] = None,
    rotate: Annotated[
        bool, typer.Option(help="Rotate the key of an enrolled device (signed by its current key; no token).")
    ] = False,
    wait_timeout_s: Annotated[
        float | None, typer.Option(help="Give up when an operator has not approved after this long; default: wait.")
    ] = None,
    poll_initial_s: Annotated[float, typer.Option(min=0.01, help="First wait while pending.")] = 5.0,
    poll_max_s: Annotated[float, typer.Option(min=0.01, help="Longest wait between two requests.")] = 300.0,
) -> None:
    """Enroll this device: make its key pair, ask for its identity, write it to the config (0600).

    Exit 0 when enrolled; 1 when refused or given up; 2 for unusable input; 3 when an operator denied it.
    """
    from edge_agent.adapters.enrollment_client import EnrollmentClient
    from edge_agent.adapters.hardware import detect_hardware
    from edge_agent.adapters.onnx_runner import available_providers, runtime_version
    from edge_agent.core.errors import EnrollmentError
    from edge_agent.enrollment import Enrollment, EnrollmentDenied, EnrollOptions, read_config

    _logging("warning")
    if not url.startswith(("http://", "https://")):
        typer.echo("error: --url must start with http:// or https://", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    options = EnrollOptions(
        url=url,
        config_path=config,
        token=token,
        device_id=device_id,
        ca_file=ca_file,
        rotate=rotate,
        wait_timeout_s=wait_timeout_s,
        poll_initial_s=poll_initial_s,
        poll_max_s=poll_max_s,
    )
    client = EnrollmentClient(url, ca_file)
    try:
        override = read_config(config).get("gpu_class")
        hardware = detect_hardware(available_providers(), runtime_version(), override).facts
        identity = Enrollment(options, hardware, client, say=lambda text: typer.echo(text, err=True)).run()
    except EnrollmentDenied as exc:
        typer.echo(f"error: enrollment denied: {exc}", err=True)
        raise typer.Exit(EXIT_DENIED) from exc
    except EnrollmentError as exc:
        typer.echo(f"error: enrollment failed: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    finally:
        client.close()
    try:
        load_config(config)
    except ConfigError as exc:
        typer.echo(f"error: enrolled, but {config} is not a usable agent config yet: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    typer.echo(f"enrolled as {identity.device_id}; identity written to {config}")
    if identity.tunnel is not None:
        gateway = identity.tunnel
        typer.echo(f"tunnel gateway {gateway.host}:{gateway.port} and its host key pinned (tunnel.gateway)")


@app.command()
def facts(as_json: Annotated[bool, typer.Option("--json", help="Print HardwareFacts as JSON.")] = False) -> None:
    """Detect this host's hardware: GPU class, compute capability, TensorRT/JetPack/L4T/driver versions, providers.

    These are the facts a hardware-keyed artifact (a TensorRT plan) is matched against.
    """
    from edge_agent.adapters.hardware import detect_hardware
    from edge_agent.adapters.onnx_runner import available_providers, runtime_version

    detected = detect_hardware(available_providers(), runtime_version())
    if as_json:
        typer.echo(detected.facts.model_dump_json())
        return
    for key, value in detected.facts.model_dump().items():
        typer.echo(f"{key}: {value}")


@app.command()
def status(
    config: ConfigOption = DEFAULT_CONFIG_PATH,
    as_json: Annotated[bool, typer.Option("--json", help="Print the journal as JSON.")] = False,
) -> None:
    """Print the journal: applied generation, active and previous models, the last apply."""
    from edge_agent.core.errors import JournalError
    from edge_agent.core.journal_file import Journal

    settings = _config(config)
    try:
        state = Journal(settings.data_dir).load()
    except JournalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    if as_json:
        typer.echo(json.dumps(state.model_dump(mode="json", exclude={"desired"}), indent=2))
        return
    typer.echo(_status_text(state.model_dump(mode="json")))


def _status_text(state: dict[str, Any]) -> str:
    lines = [f"applied generation: {state['applied_generation']}"]
    if state["failed_generation"]:
        lines.append(f"failed generation: {state['failed_generation']}")
    for name, record in sorted(state["active"].items()):
        previous = state["previous"].get(name)
        was = f" (previous v{previous['version']})" if previous else ""
        lines.append(
            f"model {name}: v{record['version']} build {record['build_id']} ({record['artifact_kind']}) "
            f"slot {record['slot']}{was}"
        )
        if record.get("fallback_reason"):
            lines.append(f"  fallback: {record['fallback_reason']}")
    last = state.get("last_apply")
    if last:
        reason = f": {last['reason']}" if last.get("reason") else ""
        lines.append(f"last apply: generation {last['generation']} {last['phase']}{reason}")
    pending = state.get("pending")
    if pending:
        lines.append(f"interrupted: generation {pending['generation']} at step {pending['step']}")
    return "\n".join(lines)
