"""Runner profiles: the shipped file loads, bad settings fail naming profile and field, rendering and merging."""

from __future__ import annotations

import copy

import pytest
import yaml

from runners import profiles as rp
from runners.options import unknown_arguments


@pytest.fixture(scope="module")
def shipped() -> dict:
    return yaml.safe_load(rp.PROFILES_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def profiles() -> dict[str, rp.Profile]:
    return rp.load_profiles(rp.PROFILES_FILE)


@pytest.fixture(autouse=True)
def _no_site_profiles(monkeypatch):
    monkeypatch.delenv(rp.PROFILES_ENV, raising=False)


def load_changed(tmp_path, shipped: dict, change) -> dict[str, rp.Profile]:
    data = copy.deepcopy(shipped)
    change(data["profiles"])
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return rp.load_profiles(path)


def test_shipped_profiles_load(profiles):
    assert set(profiles) == {"direct", "flink-local", "flink-cluster", "flink-emr"}
    assert profiles["direct"].runner == "DirectRunner"
    assert profiles["flink-local"].flink_master == "[local]"
    assert profiles["flink-local"].environment_type == "LOOPBACK"
    assert profiles["flink-cluster"].flink_master == "127.0.0.1:8081"
    emr = profiles["flink-emr"]
    assert emr.name == "flink-emr"
    assert emr.environment_type in ("DOCKER", "PROCESS")
    assert emr.state_backend.type == "rocksdb" and emr.state_backend.incremental
    assert emr.state_backend.checkpoint_dir.startswith("s3://")
    assert emr.externalized_checkpoints_retained_on_cancel


def test_every_rendered_flag_is_a_declared_option(profiles):
    """The CLI rejects undeclared options; nothing a profile renders may be one."""
    for name, profile in profiles.items():
        assert unknown_arguments(profile.beam_args(streaming=True)) == [], name


def test_java_only_flags_are_the_snake_case_of_their_java_names():
    """The job server maps lower_underscore back to lowerCamel; camelCase flags would be lost."""
    for flag, java_name, _, _ in rp.FLINK_JAVA_OPTIONS:
        assert "".join(part.capitalize() for part in flag.split("_")).lower() == java_name.lower()
        assert flag == "".join(f"_{c.lower()}" if c.isupper() else c for c in java_name)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda p: p["flink-emr"]["checkpointing"].update(intervall_ms=1),
            ["checkpointing.intervall_ms", "Extra"],
        ),
        (lambda p: p["flink-local"].update(paralelism=4), ["paralelism", "Extra"]),
        (
            lambda p: p["flink-emr"]["checkpointing"].update(mode="ONCE"),
            ["checkpointing.mode", "EXACTLY_ONCE"],
        ),
        (lambda p: p["flink-emr"]["state_backend"].update(type="memory"), ["state_backend.type", "rocksdb"]),
        (lambda p: p["flink-emr"].update(runner="SparkRunner"), ["runner", "FlinkRunner"]),
        (lambda p: p["flink-emr"].update(flink_version=1.2), ["flink_version", "quoted"]),
    ],
)
def test_unknown_keys_and_bad_values_name_profile_and_field(tmp_path, shipped, change, expected):
    with pytest.raises(ValueError) as err:
        load_changed(tmp_path, shipped, change)
    message = str(err.value)
    assert "profile flink-" in message
    for part in expected:
        assert part in message
    assert "\n" not in message


def test_slow_checkpoint_interval_is_refused_unless_allowed(tmp_path, shipped):
    def slow(p):
        p["flink-emr"]["checkpointing"].update(interval_ms=120000)

    with pytest.raises(ValueError, match=r"profile flink-emr: checkpointing: interval_ms 120000 > 60000"):
        load_changed(tmp_path, shipped, slow)

    def slow_allowed(p):
        slow(p)
        p["flink-emr"]["checkpointing"]["allow_slow_checkpoints"] = True

    loaded = load_changed(tmp_path, shipped, slow_allowed)
    assert "--checkpointing_interval=120000" in loaded["flink-emr"].beam_args()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda p: p["flink-emr"]["checkpointing"].update(min_pause_ms=30000),
            r"profile flink-emr: checkpointing: min_pause_ms \(30000\) must be < interval_ms",
        ),
        (
            lambda p: p["flink-emr"]["checkpointing"].update(timeout_ms=20000),
            r"profile flink-emr: checkpointing: timeout_ms \(20000\) must be >= interval_ms",
        ),
        (
            lambda p: p["flink-emr"]["checkpointing"].update(timeout_ms=900000),
            r"profile flink-emr: checkpointing: interval_ms \+ timeout_ms .* RPO",
        ),
        (
            lambda p: p["flink-emr"].update(max_parallelism=16),
            r"profile flink-emr: max_parallelism \(16\) must be >= parallelism",
        ),
        (
            lambda p: p["flink-emr"]["restart_strategy"].update(attempts=100),
            r"profile flink-emr: restart_strategy: attempts x delay_ms .* RTO",
        ),
        (
            lambda p: p["flink-emr"]["state_backend"].update(type="hashmap"),
            r"profile flink-emr: state_backend: incremental: true needs type: rocksdb",
        ),
        (
            lambda p: p["flink-emr"]["bundle"].update(max_time_ms=30000),
            r"profile flink-emr: bundle.max_time_ms \(30000\) must be < checkpointing.interval_ms",
        ),
        (
            lambda p: p["flink-emr"].update(environment_options=[]),
            r"profile flink-emr: environment_options needs process_command",
        ),
        (
            lambda p: p["flink-emr"].update(
                job_server_jar="/x/beam-runners-flink-1.20-job-server-2.60.0.jar"
            ),
            r"profile flink-emr: job_server_jar is Beam 2.60.0",
        ),
        (
            lambda p: p["direct"].update(parallelism=4),
            r"profile direct: parallelism: no effect on DirectRunner",
        ),
    ],
)
def test_inconsistent_settings_are_refused(tmp_path, shipped, change, expected):
    with pytest.raises(ValueError, match=expected):
        load_changed(tmp_path, shipped, change)


def test_flink_emr_renders_the_production_flags(profiles):
    args = profiles["flink-emr"].beam_args()
    for expected in (
        "--runner=FlinkRunner",
        "--flink_master=${RISKPIPE_FLINK_MASTER}",
        "--flink_version=1.20",
        "--flink_job_server_jar=/usr/lib/beam/beam-runners-flink-1.20-job-server-2.73.0.jar",
        "--environment_type=PROCESS",
        "--environment_option=process_command=/opt/apache/beam/boot",
        "--parallelism=32",
        "--max_parallelism=512",
        "--checkpointing_interval=30000",
        "--checkpointing_mode=EXACTLY_ONCE",
        "--checkpoint_timeout_millis=300000",
        "--min_pause_between_checkpoints=10000",
        "--num_concurrent_checkpoints=1",
        "--state_backend=rocksdb",
        "--state_backend_storage_path=s3://riskpipe-prod-flink-state/checkpoints",
        "--externalized_checkpoints_enabled",
        "--retain_externalized_checkpoints_on_cancellation",
        "--number_of_execution_retries=10",
        "--execution_retry_delay=30000",
        "--max_bundle_size=1000",
        "--max_bundle_time_mills=1000",
        "--job_server_jvm_property=--add-opens=java.base/java.lang=ALL-UNNAMED",
    ):
        assert expected in args
    assert not any(arg.startswith(("--checkpointingMode", "--stateBackend")) for arg in args)
    assert "--parallelism=48" in profiles["flink-emr"].beam_args(streaming=True)
    assert profiles["flink-emr"].flink_conf() == {"state.backend.incremental": "true"}


def test_beam_args_overrides(profiles):
    args = profiles["flink-emr"].beam_args(
        {
            "parallelism": 8,
            "--savepoint_path": "s3://b/chk-7",
            "retain_externalized_checkpoints_on_cancellation": None,
        }
    )
    assert "--parallelism=8" in args and "--parallelism=32" not in args
    assert "--savepoint_path=s3://b/chk-7" in args
    assert "--retain_externalized_checkpoints_on_cancellation" not in args


def test_apply_profile_replaces_the_runner_and_the_command_line_wins(profiles):
    argv = ["--input", "in", "--runner", "flink-local", "--parallelism=8", "--mode", "stream"]
    out = rp.apply_profile(argv, profiles)
    assert out[:2] == ["--input", "in"]
    assert out[2] == "--runner=FlinkRunner"
    assert "flink-local" not in out
    assert "--flink_master=[local]" in out
    assert "--environment_type=LOOPBACK" in out
    assert [arg for arg in out if arg.startswith("--parallelism")] == ["--parallelism=8"]
    assert out[-3:] == ["--parallelism=8", "--mode", "stream"]


def test_apply_profile_environment_and_jvm_properties(profiles, monkeypatch):
    monkeypatch.setenv("RISKPIPE_FLINK_MASTER", "10.0.0.5:40123")
    out = rp.apply_profile(
        ["--runner=flink-emr", "--environment_type=DOCKER", "--job_server_jvm_property=-Xmx2g"], profiles
    )
    assert "--flink_master=10.0.0.5:40123" in out
    assert [a for a in out if a.startswith("--environment")] == ["--environment_type=DOCKER"]
    jvm = [a for a in out if a.startswith("--job_server_jvm_property")]
    assert len(jvm) == 4 and jvm[-1] == "--job_server_jvm_property=-Xmx2g"


def test_apply_profile_needs_placeholders_filled(profiles, monkeypatch):
    monkeypatch.delenv("RISKPIPE_FLINK_MASTER", raising=False)
    with pytest.raises(ValueError, match=r"profile flink-emr: flink_master uses \$\{RISKPIPE_FLINK_MASTER\}"):
        rp.apply_profile(["--runner", "flink-emr"], profiles)
    out = rp.apply_profile(["--runner", "flink-emr", "--flink_master=jm:8081"], profiles)
    assert "--flink_master=jm:8081" in out and not any("${" in arg for arg in out)


@pytest.mark.parametrize(
    "argv",
    [
        ["--runner=DirectRunner", "--input", "in"],
        ["--input", "in", "--runner", "FlinkRunner", "--flink_master=[local]"],
        ["--input", "in"],
    ],
)
def test_beam_runners_and_no_runner_pass_through(profiles, argv):
    assert rp.apply_profile(argv, profiles) == argv


def test_unknown_runner_names_the_choices(profiles):
    with pytest.raises(ValueError) as err:
        rp.apply_profile(["--runner=flink-prod"], profiles)
    message = str(err.value)
    assert "'flink-prod'" in message
    for choice in ("direct", "flink-local", "flink-cluster", "flink-emr", "DirectRunner", "FlinkRunner"):
        assert choice in message


def test_render_emr_command(profiles):
    command = rp.render_emr_command(
        profiles["flink-emr"], "all", ["--mode", "stream", "--input", "s3://in", "--env", "prod"]
    )
    assert command[:3] == ["riskpipe", "run", "all"]
    assert "--setup_file=./setup.py" in command
    assert "--flink_master=${RISKPIPE_FLINK_MASTER}" in command
    assert "--parallelism=48" in command  # a stream job gets streaming_parallelism
    for flag in (
        "--checkpointing_interval=30000",
        "--checkpointing_mode=EXACTLY_ONCE",
        "--state_backend=rocksdb",
        "--state_backend_storage_path=s3://riskpipe-prod-flink-state/checkpoints",
        "--retain_externalized_checkpoints_on_cancellation",
    ):
        assert flag in command
    with pytest.raises(ValueError, match="unknown job"):
        rp.render_emr_command(profiles["flink-emr"], "nope", [])


def test_main_show_prints_the_effective_options(capsys):
    assert rp.main(["show", "flink-emr"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert "--runner=FlinkRunner" in lines
    assert "--checkpointing_interval=30000" in lines
    assert "# cluster config (no Beam option): state.backend.incremental: true" in lines
    assert err == ""


def test_main_unknown_profile_is_one_line_and_exit_2(capsys):
    assert rp.main(["show", "flink-nope"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "flink-nope" in err and "flink-emr" in err


def test_main_emr_command(capsys):
    assert rp.main(["emr-command", "flink-emr", "curate", "--input", "s3://in"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("riskpipe run curate --input s3://in --runner=FlinkRunner")
    assert "--setup_file=./setup.py" in out
