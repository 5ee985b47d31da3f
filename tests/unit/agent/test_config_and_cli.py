"""Config loading (file + environment), help texts, and the one-shot CLI commands (apply, status, facts)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.config import AgentConfig, ConfigError, load_config, settings_help
from edge_agent.protocol.vocabulary import MqttProtocol
from tests.unit.agent.builders import build_version, signed, with_plan, write_config

runner = CliRunner()


def test_yaml_file_and_environment_overrides(tmp_path, signer, monkeypatch):
    path = write_config(
        tmp_path / "agent.yaml",
        tmp_path / "data",
        signer.public_key_b64,
        mqtt={"host": "broker", "port": 1883, "username": "dev-1", "password": "x", "protocol": "3.1.1"},
    )
    monkeypatch.setenv("EDGE_AGENT_MQTT__PORT", "8883")
    monkeypatch.setenv("EDGE_AGENT_TELEMETRY_INTERVAL_S", "5")
    config = load_config(path)
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.protocol) == ("broker", 8883, MqttProtocol.V311)
    assert config.telemetry_interval_s == 5 and config.labels == {"site": "factory-a"}
    assert config.serving.url() == "http://127.0.0.1:8500"
    assert "x" not in repr(config.mqtt.password)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("device_id: [unclosed", "not valid YAML", id="bad-yaml"),
        pytest.param("- a list", "must hold a mapping", id="not-a-mapping"),
        pytest.param("device_id: dev-1\n", "control_plane_public_key: Field required", id="missing-key"),
        pytest.param("device_id: dev-1\ncontrol_plane_public_key: nope\n", "not a base64 ed25519", id="bad-key"),
        pytest.param("device_id: a/b\ncontrol_plane_public_key: x\n", "device_id", id="bad-device-id"),
        pytest.param(
            "device_id: d\ncontrol_plane_public_key: x\nmqtt: {protocol: 4}\n", "mqtt.protocol", id="bad-protocol"
        ),
        pytest.param("device_id: d\ncontrol_plane_public_key: x\ntypo_key: 1\n", "typo_key", id="unknown-key"),
    ],
)
def test_bad_config_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "agent.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path)
    result = runner.invoke(app, ["status", "--config", str(path)])
    assert result.exit_code == 2 and message in result.output


def test_every_setting_is_documented():
    text = settings_help()
    for name, field in AgentConfig.model_fields.items():
        assert field.description, name
        assert f"  {name}" in text
    for key in ("mqtt.protocol", "mqtt.keepalive_s", "serving.advertise_url", "download.max_attempts"):
        assert key in text
    assert "mqtt.protocol" in runner.invoke(app, ["config-help"]).output
    run_help = runner.invoke(app, ["run", "--help"]).output
    assert "EDGE_AGENT_" in run_help and "control_plane_public_key" in run_help


def test_apply_status_and_idempotent_rerun(tmp_path, signer):
    config = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64)
    desired = tmp_path / "desired.json"
    desired.write_text(signed(signer, 1, [build_version(tmp_path / "art", 1)]).model_dump_json())

    first = runner.invoke(app, ["apply", "--desired", str(desired), "--config", str(config), "--json"])
    again = runner.invoke(app, ["apply", "--desired", str(desired), "--config", str(config), "--json"])
    status = runner.invoke(app, ["status", "--config", str(config)])

    assert first.exit_code == 0, first.output
    outcome = json.loads(first.output)
    assert {k: outcome[k] for k in ("ok", "changed", "generation", "reason")} == {
        "ok": True,
        "changed": True,
        "generation": 1,
        "reason": "",
    }
    # the report the control plane stores for an Ansible device: the model serves (the daemon loads it), even in
    # the second, one-shot process that did not load it itself
    rerun = json.loads(again.output)
    assert again.exit_code == 0 and rerun["changed"] is False
    for report in (outcome["reported"], rerun["reported"]):
        assert report["applied_generation"] == 1 and report["channel"] == "ansible"
        assert [(m["name"], m["version"], m["health"]) for m in report["models"]] == [("lin", 1, "serving")]
    assert "applied generation: 1" in status.output and "model lin: v1 build b1 (onnx)" in status.output


def test_apply_uses_the_artifact_dir_instead_of_downloading(tmp_path, signer):
    config = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64)
    model = build_version(tmp_path / "art", 1)
    artifacts = tmp_path / "pushed"
    artifacts.mkdir()
    for ref, name in ((model.artifact, "lin-v1.onnx"), (model.selftest.artifact, "lin-v1-selftest.npz")):
        (artifacts / ref.sha256).write_bytes((tmp_path / "art" / name).read_bytes())
    unreachable = model.model_copy(
        update={
            "artifact": model.artifact.model_copy(update={"url": "http://127.0.0.1:9/none"}),
            "selftest": model.selftest.model_copy(
                update={"artifact": model.selftest.artifact.model_copy(update={"url": "http://127.0.0.1:9/t"})}
            ),
        }
    )
    desired = tmp_path / "desired.json"
    desired.write_text(signed(signer, 1, [unreachable]).model_dump_json())
    (artifacts / ("0" * 64)).write_bytes(b"an artifact an older push left")
    result = runner.invoke(
        app, ["apply", "--desired", str(desired), "--config", str(config), "--artifact-dir", str(artifacts), "--prune"]
    )
    assert result.exit_code == 0, result.output
    assert "generation 1: applied" in result.output
    # --prune keeps what the document names (a re-run finds them: nothing to copy again) and drops the rest
    assert sorted(p.name for p in artifacts.iterdir()) == sorted(
        [model.artifact.sha256, model.selftest.artifact.sha256]
    )


def test_apply_refuses_with_a_reason(tmp_path, signer):
    from edge_agent.protocol import Signer

    config = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64)
    forged = tmp_path / "forged.json"
    forged.write_text(signed(Signer.generate(), 1, [build_version(tmp_path / "art", 1)]).model_dump_json())
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{]")
    bad_model = tmp_path / "bad.json"
    bad_model.write_text(signed(signer, 2, [build_version(tmp_path / "art", 2, bad=True)]).model_dump_json())

    refused = runner.invoke(app, ["apply", "--desired", str(forged), "--config", str(config)])
    unusable = runner.invoke(app, ["apply", "--desired", str(garbage), "--config", str(config)])
    failed = runner.invoke(app, ["apply", "--desired", str(bad_model), "--config", str(config)])

    assert refused.exit_code == 1 and "pins key" in refused.output
    assert unusable.exit_code == 2 and "cannot use desired-state file" in unusable.output
    assert failed.exit_code == 1 and "self-test failed" in failed.output
    again = json.loads(
        runner.invoke(app, ["apply", "--desired", str(bad_model), "--config", str(config), "--json"]).output
    )
    last = again["reported"]["last_apply"]
    assert again["ok"] is False and last["generation"] == 2 and last["phase"] == "failed"


def test_apply_waits_for_the_lock(tmp_path, signer):
    from edge_agent.adapters.lockfile import apply_lock

    config = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64)
    desired = tmp_path / "desired.json"
    desired.write_text(signed(signer, 1, [build_version(tmp_path / "art", 1)]).model_dump_json())
    with apply_lock(tmp_path / "data"):
        busy = runner.invoke(
            app, ["apply", "--desired", str(desired), "--config", str(config), "--lock-timeout-s", "0.2"]
        )
    assert busy.exit_code == 1 and "another edge-agent process is applying" in busy.output


def test_facts_json():
    result = runner.invoke(app, ["facts", "--json"])
    facts = json.loads(result.output)
    assert result.exit_code == 0 and facts["gpu_class"].startswith(("cpu-", "dgpu-", "jetson-"))
    assert "CPUExecutionProvider" in facts["available_providers"]
    # What a hardware key is matched against is always reported (null where this host has none of it).
    for key in ("compute_capability", "tensorrt_version", "jetpack_version", "l4t_version", "driver_version"):
        assert key in facts


def test_status_shows_the_fallback_in_use(tmp_path, signer):
    config = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64)
    desired = tmp_path / "desired.json"
    desired.write_text(signed(signer, 1, [with_plan(build_version(tmp_path / "art", 1))]).model_dump_json())

    applied = runner.invoke(app, ["apply", "--desired", str(desired), "--config", str(config)])
    status = runner.invoke(app, ["status", "--config", str(config)])

    assert applied.exit_code == 0, applied.output
    assert "model lin: v1 build b1 (onnx)" in status.output
    assert "fallback: tensorrt-plan b1-plan built for dgpu-ampere" in status.output


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"builder": True}, "builder: true needs control_plane_url", id="builder-without-url"),
        pytest.param({"control_plane_url": "cp:8000"}, "control_plane_url", id="url-without-scheme"),
    ],
)
def test_builder_settings_are_checked(tmp_path, signer, settings, message):
    path = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64, **settings)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_builder_settings_defaults_and_help(tmp_path, signer):
    path = write_config(
        tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64, control_plane_url="http://cp:8000"
    )
    config = load_config(path)
    assert (config.builder, config.builds_dir()) == (False, tmp_path / "data" / "builds")
    text = runner.invoke(app, ["config-help"]).output
    for key in ("builder (default False)", "builder_workdir", "control_plane_url", "control_plane_token"):
        assert key in text
