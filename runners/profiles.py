"""Runner profiles: named, validated Beam/Flink settings for ``riskpipe run JOB --runner PROFILE``.

``runners/profiles.yaml`` holds one profile per target (``direct``,
``flink-local``, ``flink-cluster``, ``flink-emr``); this module loads it into
closed, typed models (a typo fails at load time, naming profile and field),
renders a profile as Beam arguments, and lets the CLI expand
``--runner PROFILE`` into them.

Precedence, highest first:

1. a flag given on the command line wins over the profile's value for that
   flag. ``--environment_type`` and ``--environment_option`` replace the
   profile's environment as a whole; ``--job_server_jvm_property`` adds to
   the profile's JVM properties (the Java 17 ``--add-opens`` stay);
2. the profile;
3. Beam's and Flink's defaults: a setting the profile leaves out renders no
   flag.

Flag names. Beam's Python SDK declares only part of the Flink runner's
options (``FlinkRunnerOptions``: ``--flink_master``, ``--flink_version``,
``--flink_job_server_jar``, ``--parallelism``, ``--max_parallelism``; and
``PortableOptions``/``JobServerOptions``). The rest are properties of Java's
``FlinkPipelineOptions``. Python sends options to the job server as
``beam:option:<name>:v1`` and the job server maps ``lower_underscore`` names
to ``lowerCamel`` (``PipelineOptionsTranslation.fromProto``); it also
describes its own options to Python in ``lower_underscore``. So
``checkpointingMode`` is spelled ``--checkpointing_mode`` on this side; a
camelCase flag would reach Java lowercased (``checkpointingmode``) and be
ignored without a word. `FlinkJavaOptions` declares these flags
with their Java names, so ``riskpipe`` checks them like any other option
(CONVENTIONS rule 10) once this module is imported.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, StandardOptions
from apache_beam.version import __version__ as BEAM_VERSION
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

PROFILES_FILE = Path(__file__).with_name("profiles.yaml")
PROFILES_ENV = "RISKPIPE_PROFILES"  # another profiles file, e.g. a site's own EMR settings

# Service levels (ARCHITECTURE.md section 1) the validation enforces.
FRESHNESS_MAX_INTERVAL_MS = 60_000  # fraud features < 3 min; sinks commit one checkpoint later
RPO_MS = 15 * 60_000
RTO_MS = 30 * 60_000
FLINK_KEY_GROUP_LIMIT = 32_768  # Flink's upper bound for max parallelism (2^15)

# Beam's job server jar on Java 17 needs these, as Beam's own flink_runner_test.py passes them.
JAVA17_ADD_OPENS = (
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
)

BEAM_RUNNERS = ("DirectRunner", "FlinkRunner", "PortableRunner")
ENVIRONMENT_TYPES = ("LOOPBACK", "DOCKER", "PROCESS", "EXTERNAL")

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_JOB_SERVER_JAR = re.compile(r"beam-runners-flink-(?P<flink>\d+\.\d+)-job-server-(?P<beam>.+)\.jar$")
_PROFILE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_DOTTED_CLASS = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


# --- Flink runner options Beam's Python SDK does not declare -------------------------------------


def _flag_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# (flag, Java FlinkPipelineOptions property, type or choices, what it does)
FLINK_JAVA_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("checkpointing_interval", "checkpointingInterval", int, "ms between checkpoints; unset: none"),
    ("checkpointing_mode", "checkpointingMode", ("EXACTLY_ONCE", "AT_LEAST_ONCE"), "consistency guarantee"),
    ("checkpoint_timeout_millis", "checkpointTimeoutMillis", int, "ms before a checkpoint is abandoned"),
    ("min_pause_between_checkpoints", "minPauseBetweenCheckpoints", int, "ms of processing between two"),
    ("num_concurrent_checkpoints", "numConcurrentCheckpoints", int, "checkpoints in flight at once"),
    ("fail_on_checkpointing_errors", "failOnCheckpointingErrors", bool, "a failed checkpoint fails the job"),
    ("state_backend", "stateBackend", ("rocksdb", "filesystem"), "where keyed state lives"),
    ("state_backend_storage_path", "stateBackendStoragePath", str, "checkpoint storage URI"),
    ("externalized_checkpoints_enabled", "externalizedCheckpointsEnabled", bool, "keep checkpoint metadata"),
    (
        "retain_externalized_checkpoints_on_cancellation",
        "retainExternalizedCheckpointsOnCancellation",
        bool,
        "keep the last checkpoint when the job is cancelled",
    ),
    ("number_of_execution_retries", "numberOfExecutionRetries", int, "restarts before the job fails"),
    ("execution_retry_delay", "executionRetryDelay", int, "ms between restarts"),
    ("max_bundle_size", "maxBundleSize", int, "elements per bundle at most"),
    ("max_bundle_time_mills", "maxBundleTimeMills", int, "ms a bundle stays open at most"),
    ("shutdown_sources_after_idle_ms", "shutdownSourcesAfterIdleMs", int, "stop idle sources after ms"),
    ("savepoint_path", "savepointPath", str, "restore from this savepoint or retained checkpoint"),
    ("allow_non_restored_state", "allowNonRestoredState", bool, "skip state of steps no longer in the graph"),
)


class FlinkJavaOptions(PipelineOptions):
    """Flink checkpoint, state, restart and bundle options that only Java's FlinkPipelineOptions declares.

    Declared here so they are checked, typed and documented; their values reach
    the Flink job server under the same snake_case names. Every default is
    None: an option not given is not sent, and Flink's or Beam's default holds.
    """

    @classmethod
    def _add_argparse_args(cls, parser):
        for flag, java_name, kind, what in FLINK_JAVA_OPTIONS:
            kwargs: dict[str, Any] = {"default": None, "help": f"Flink runner: {what} (Java {java_name})"}
            if kind is bool:
                kwargs.update(nargs="?", const=True, type=_flag_bool)
            elif isinstance(kind, tuple):
                kwargs["choices"] = kind
            else:
                kwargs["type"] = kind
            try:
                parser.add_argument(f"--{flag}", **kwargs)
            except argparse.ArgumentError:
                pass  # a newer Beam declares it in Python itself: that declaration wins


# --- the profile models -------------------------------------------------------------------------

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Checkpointing(_Closed):
    """Flink checkpoints: how often, how consistent, how long one may take."""

    interval_ms: PositiveInt
    mode: Literal["EXACTLY_ONCE", "AT_LEAST_ONCE"] = "EXACTLY_ONCE"
    timeout_ms: PositiveInt
    min_pause_ms: NonNegativeInt = 0
    max_concurrent: PositiveInt = 1
    allow_slow_checkpoints: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Checkpointing:
        if self.interval_ms > FRESHNESS_MAX_INTERVAL_MS and not self.allow_slow_checkpoints:
            raise ValueError(
                f"interval_ms {self.interval_ms} > {FRESHNESS_MAX_INTERVAL_MS}: exactly-once sinks become "
                "visible one checkpoint later, which breaks the 3-minute freshness SLA; "
                "set allow_slow_checkpoints: true to accept that"
            )
        if self.min_pause_ms >= self.interval_ms:
            raise ValueError(
                f"min_pause_ms ({self.min_pause_ms}) must be < interval_ms ({self.interval_ms}), "
                "or checkpoints run further apart than the interval says"
            )
        if self.timeout_ms < self.interval_ms:
            raise ValueError(
                f"timeout_ms ({self.timeout_ms}) must be >= interval_ms ({self.interval_ms}): a checkpoint "
                "that may not take as long as the interval fails under ordinary load spikes"
            )
        if self.interval_ms + self.timeout_ms > RPO_MS:
            raise ValueError(
                f"interval_ms + timeout_ms ({self.interval_ms + self.timeout_ms}) exceeds the RPO of "
                f"{RPO_MS} ms: after one failed checkpoint the newest restorable state would be older"
            )
        if self.max_concurrent > 1 and self.min_pause_ms > 0:
            raise ValueError(
                f"max_concurrent ({self.max_concurrent}) > 1 has no effect with min_pause_ms > 0 "
                "(Flink then runs one checkpoint at a time); set one of them back"
            )
        return self


class StateBackend(_Closed):
    """Where keyed state and timers live, and where checkpoints are written."""

    type: Literal["rocksdb", "hashmap"]
    incremental: bool = False
    checkpoint_dir: str

    @model_validator(mode="after")
    def _consistent(self) -> StateBackend:
        if "://" not in self.checkpoint_dir:
            raise ValueError(
                f"checkpoint_dir {self.checkpoint_dir!r} needs a scheme (s3://, hdfs://, file:///...): "
                "Flink resolves it on every TaskManager"
            )
        if self.incremental and self.type != "rocksdb":
            raise ValueError(
                "incremental: true needs type: rocksdb (the hashmap backend snapshots all state)"
            )
        return self


class RestartStrategy(_Closed):
    """Fixed-delay restarts from the last checkpoint before the job fails for good."""

    attempts: NonNegativeInt
    delay_ms: NonNegativeInt

    @model_validator(mode="after")
    def _within_rto(self) -> RestartStrategy:
        if self.attempts * self.delay_ms > RTO_MS:
            raise ValueError(
                f"attempts x delay_ms ({self.attempts * self.delay_ms} ms) exceeds the RTO of {RTO_MS} ms: "
                "automatic retries alone would outlast it"
            )
        return self


class Bundle(_Closed):
    """Bundle limits: elements and milliseconds before a bundle's output leaves the SDK worker."""

    max_size: PositiveInt
    max_time_ms: PositiveInt


# Fields that mean something only on a Flink job server.
_FLINK_FIELDS = (
    "streaming_parallelism",
    "parallelism",
    "max_parallelism",
    "checkpointing",
    "state_backend",
    "externalized_checkpoints_retained_on_cancel",
    "restart_strategy",
    "bundle",
    "shutdown_sources_after_idle_ms",
    "flink_master",
    "flink_version",
    "job_server_jar",
    "environment_type",
    "environment_options",
    "job_endpoint",
    "job_server_jvm_properties",
)


class Profile(_Closed):
    """One runner profile. ``name`` is the key it was loaded under."""

    description: str = ""
    runner: Literal["DirectRunner", "FlinkRunner", "PortableRunner"]
    streaming_parallelism: PositiveInt | None = None
    parallelism: PositiveInt | None = None
    max_parallelism: Annotated[int, Field(gt=0, le=FLINK_KEY_GROUP_LIMIT)] | None = None
    checkpointing: Checkpointing | None = None
    state_backend: StateBackend | None = None
    externalized_checkpoints_retained_on_cancel: bool = False
    restart_strategy: RestartStrategy | None = None
    bundle: Bundle | None = None
    shutdown_sources_after_idle_ms: NonNegativeInt | None = None
    flink_master: str | None = None
    flink_version: str | None = None
    job_server_jar: str | None = None
    environment_type: Literal["LOOPBACK", "DOCKER", "PROCESS", "EXTERNAL"] | None = None
    environment_options: list[str] = Field(default_factory=list)
    job_endpoint: str | None = None
    job_server_jvm_properties: list[str] = Field(default_factory=list)  # added after the Java 17 --add-opens

    _name: str = PrivateAttr("")

    @field_validator("flink_version", mode="before")
    @classmethod
    def _quoted_version(cls, value: Any) -> Any:
        if isinstance(value, float | int):
            raise ValueError(f'write it quoted ("1.20"): YAML read {value!r} as a number')
        return value

    @property
    def name(self) -> str:
        return self._name

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.runner == "DirectRunner":
            stray = sorted(self.model_fields_set & set(_FLINK_FIELDS))
            if stray:
                raise ValueError(f"{', '.join(stray)}: no effect on DirectRunner; remove them")
            return self
        self._check_runner_fields()
        widest = max(self.parallelism or 0, self.streaming_parallelism or 0)
        if self.max_parallelism is not None and self.max_parallelism < widest:
            raise ValueError(
                f"max_parallelism ({self.max_parallelism}) must be >= parallelism and "
                f"streaming_parallelism ({widest}): it is the number of key groups"
            )
        if self.externalized_checkpoints_retained_on_cancel and (
            self.checkpointing is None or self.state_backend is None
        ):
            raise ValueError(
                "externalized_checkpoints_retained_on_cancel needs checkpointing and "
                "state_backend.checkpoint_dir (where the retained checkpoint is kept)"
            )
        if self.bundle and self.checkpointing and self.bundle.max_time_ms >= self.checkpointing.interval_ms:
            raise ValueError(
                f"bundle.max_time_ms ({self.bundle.max_time_ms}) must be < checkpointing.interval_ms "
                f"({self.checkpointing.interval_ms})"
            )
        self._check_environment()
        return self

    def _check_runner_fields(self) -> None:
        if self.runner == "FlinkRunner":
            if not self.flink_master:
                raise ValueError("flink_master is required for FlinkRunner ([local], [auto] or host:port)")
            if self.flink_version is None:
                raise ValueError("flink_version is required for FlinkRunner (the job server's Flink)")
        if self.runner == "PortableRunner" and not self.job_endpoint:
            raise ValueError("job_endpoint is required for PortableRunner (host:port of the job server)")
        if (
            self.flink_version is not None
            and self.flink_version not in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
        ):
            raise ValueError(
                f"flink_version {self.flink_version!r}: Beam {BEAM_VERSION} supports "
                f'{", ".join(FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS)} (quote it: "1.20")'
            )
        if not self.starts_job_server:
            unused = [
                f
                for f in ("flink_version", "job_server_jar", "job_server_jvm_properties")
                if getattr(self, f)
            ]
            if unused:
                raise ValueError(
                    f"{', '.join(unused)}: unused, the job server at job_endpoint is started elsewhere"
                )
        if self.job_server_jar:
            match = _JOB_SERVER_JAR.search(self.job_server_jar)
            if match and match["flink"] != self.flink_version:
                raise ValueError(
                    f"job_server_jar is for Flink {match['flink']} but flink_version is {self.flink_version}"
                )
            if match and match["beam"] != BEAM_VERSION:
                raise ValueError(
                    f"job_server_jar is Beam {match['beam']} but the installed SDK is {BEAM_VERSION}: "
                    "the job server must be exactly the SDK's version"
                )

    def _check_environment(self) -> None:
        if self.environment_type is None:
            raise ValueError(
                f"environment_type is required for {self.runner} ({', '.join(ENVIRONMENT_TYPES)})"
            )
        keys = {option.split("=", 1)[0] for option in self.environment_options}
        needed = {"PROCESS": "process_command", "EXTERNAL": "external_service_address"}.get(
            self.environment_type
        )
        if needed and needed not in keys:
            raise ValueError(
                f"environment_options needs {needed}=... for environment_type {self.environment_type}"
            )

    @property
    def starts_job_server(self) -> bool:
        """True when Beam starts a Flink job server JVM next to the submitting process."""
        return self.runner == "FlinkRunner" and not self.job_endpoint

    # --- rendering -------------------------------------------------------------------------------

    def _entries(self, streaming: bool = False) -> list[tuple[str, Any, str]]:
        """(flag, value, profile field) in the order they are rendered; True renders a bare flag."""
        out: list[tuple[str, Any, str]] = [("runner", self.runner, "runner")]
        if self.runner == "DirectRunner":
            return out

        def add(flag: str, value: Any, field: str) -> None:
            if value is not None and value is not False:
                out.append((flag, value, field))

        add("flink_master", self.flink_master, "flink_master")
        add("flink_version", self.flink_version, "flink_version")
        add("flink_job_server_jar", self.job_server_jar, "job_server_jar")
        add("job_endpoint", self.job_endpoint, "job_endpoint")
        add("environment_type", self.environment_type, "environment_type")
        for option in self.environment_options:
            add("environment_option", option, "environment_options")
        if streaming and self.streaming_parallelism:
            add("parallelism", self.streaming_parallelism, "streaming_parallelism")
        else:
            add("parallelism", self.parallelism, "parallelism")
        add("max_parallelism", self.max_parallelism, "max_parallelism")
        if cp := self.checkpointing:
            add("checkpointing_interval", cp.interval_ms, "checkpointing.interval_ms")
            add("checkpointing_mode", cp.mode, "checkpointing.mode")
            add("checkpoint_timeout_millis", cp.timeout_ms, "checkpointing.timeout_ms")
            add("min_pause_between_checkpoints", cp.min_pause_ms, "checkpointing.min_pause_ms")
            add("num_concurrent_checkpoints", cp.max_concurrent, "checkpointing.max_concurrent")
        if sb := self.state_backend:
            # Beam's Flink runner names Flink's hashmap backend (heap state, file checkpoints) "filesystem".
            add("state_backend", "rocksdb" if sb.type == "rocksdb" else "filesystem", "state_backend.type")
            add("state_backend_storage_path", sb.checkpoint_dir, "state_backend.checkpoint_dir")
        retained = self.externalized_checkpoints_retained_on_cancel
        add("externalized_checkpoints_enabled", retained, "externalized_checkpoints_retained_on_cancel")
        add(
            "retain_externalized_checkpoints_on_cancellation",
            retained,
            "externalized_checkpoints_retained_on_cancel",
        )
        if rs := self.restart_strategy:
            add("number_of_execution_retries", rs.attempts, "restart_strategy.attempts")
            add("execution_retry_delay", rs.delay_ms, "restart_strategy.delay_ms")
        if b := self.bundle:
            add("max_bundle_size", b.max_size, "bundle.max_size")
            add("max_bundle_time_mills", b.max_time_ms, "bundle.max_time_ms")
        add(
            "shutdown_sources_after_idle_ms",
            self.shutdown_sources_after_idle_ms,
            "shutdown_sources_after_idle_ms",
        )
        if self.starts_job_server:
            for prop in (*JAVA17_ADD_OPENS, *self.job_server_jvm_properties):
                add("job_server_jvm_property", prop, "job_server_jvm_properties")
        return out

    def beam_args(self, overrides: Mapping[str, Any] | None = None, *, streaming: bool = False) -> list[str]:
        """The Beam/Flink arguments this profile stands for.

        ``overrides`` maps flag names (``"parallelism"``, ``"--savepoint_path"``) to values that
        replace the profile's (a list for a repeatable flag; None or False drops the flag; True
        renders it bare); flags the profile does not set are appended. ``streaming`` picks
        ``streaming_parallelism`` over ``parallelism``. Placeholders stay as written.
        """
        entries = self._entries(streaming)
        if overrides:
            entries = _apply_overrides(entries, {_flag_name(k): v for k, v in overrides.items()})
        return _render(entries)

    def flink_conf(self) -> dict[str, str]:
        """Cluster configuration this profile relies on that no Beam option can set."""
        if self.state_backend and self.state_backend.type == "rocksdb":
            return {"state.backend.incremental": str(self.state_backend.incremental).lower()}
        return {}


class _ProfilesFile(_Closed):
    profiles: dict[str, Profile]

    @model_validator(mode="after")
    def _names(self) -> _ProfilesFile:
        for name, profile in self.profiles.items():
            if not _PROFILE_NAME.match(name):
                raise ValueError(f"profile name {name!r}: use lowercase letters, digits and '-'")
            alias = _beam_runner_class(name)
            if alias is not None and alias != profile.runner:
                raise ValueError(
                    f"profile {name}: the name is Beam's alias for {alias}, so its runner must be {alias}"
                )
            profile._name = name
        return self


# --- loading ------------------------------------------------------------------------------------


def _describe(err: ValidationError, source: str) -> str:
    """One line: every problem as 'profile NAME: field.path: message'."""
    problems = []
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        where = ""
        if loc[:1] == ["profiles"] and len(loc) >= 2:
            where = f"profile {loc[1]}"
            loc = loc[2:]
        elif loc:
            where = "top level"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] not in ("value_error", "missing") and "input" in item:
            message += f" (got {item['input']!r})"
        field = ".".join(loc)
        problems.append(": ".join(part for part in (where, field, message) if part))
    return f"{source}: " + "; ".join(problems)


def load_profiles(path: str | os.PathLike[str] | None = None) -> dict[str, Profile]:
    """Profiles by name from ``path``, ``$RISKPIPE_PROFILES`` or the shipped ``runners/profiles.yaml``.

    Raises ValueError (one line, naming profile and field) when the file is invalid.
    """
    source = Path(path or os.environ.get(PROFILES_ENV) or PROFILES_FILE)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read runner profiles {source}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    try:
        return dict(_ProfilesFile.model_validate(data).profiles)
    except ValidationError as err:
        raise ValueError(_describe(err, str(source))) from None


def get_profile(name: str, profiles: Mapping[str, Profile] | None = None) -> Profile:
    profiles = load_profiles() if profiles is None else profiles
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; choose one of: {', '.join(sorted(profiles))}")
    return profiles[name]


# --- merging with the command line --------------------------------------------------------------

# Spellings that name the same option; the key is the spelling profiles render.
_ALIASES = {
    "environment_options": "environment_option",
    "job_server_jvm_properties": "job_server_jvm_property",
}
# Given on the command line, any of these replaces the profile's whole environment.
_ENVIRONMENT = frozenset({"environment_type", "environment_option", "environment_config"})
# Repeatable flags whose command-line values add to the profile's.
_ACCUMULATE = frozenset({"job_server_jvm_property"})


def _flag_name(arg: str) -> str:
    name = arg.lstrip("-").split("=", 1)[0].replace("-", "_")
    return _ALIASES.get(name, name)


def _given_flags(argv: Sequence[str]) -> set[str]:
    given = set()
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("--"):
            given.add(_flag_name(arg))
    return given


def _is_streaming(argv: Sequence[str]) -> bool:
    for i, arg in enumerate(argv):
        if arg in ("--streaming", "--mode=stream"):
            return True
        if arg == "--mode" and i + 1 < len(argv) and argv[i + 1] == "stream":
            return True
    return False


def _overridden(flag: str, given: set[str]) -> bool:
    if flag in _ACCUMULATE:
        return False
    if flag in _ENVIRONMENT:
        return bool(given & _ENVIRONMENT)
    return flag in given


def _apply_overrides(
    entries: list[tuple[str, Any, str]], overrides: dict[str, Any]
) -> list[tuple[str, Any, str]]:
    out: list[tuple[str, Any, str]] = []
    done: set[str] = set()

    def emit(flag: str) -> None:
        value = overrides[flag]
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None and item is not False:
                out.append((flag, item, "override"))
        done.add(flag)

    for entry in entries:
        flag = entry[0]
        if flag not in overrides:
            out.append(entry)
        elif flag not in done:
            emit(flag)
    for flag in overrides:
        if flag not in done:
            emit(flag)
    return out


def _render(entries: Sequence[tuple[str, Any, str]]) -> list[str]:
    return [f"--{flag}" if value is True else f"--{flag}={value}" for flag, value, _ in entries]


def _expand(profile: Profile, entries: list[tuple[str, Any, str]]) -> list[tuple[str, Any, str]]:
    """Fill ``${VAR}`` placeholders from the environment; a missing one is a configuration error."""
    out = []
    for flag, value, field in entries:
        if isinstance(value, str):
            for var in _PLACEHOLDER.findall(value):
                if var not in os.environ:
                    raise ValueError(
                        f"profile {profile.name}: {field} uses ${{{var}}}, which is not set; "
                        f"export {var} or pass --{flag}=..."
                    )
            value = _PLACEHOLDER.sub(lambda m: os.environ[m.group(1)], value)
        out.append((flag, value, field))
    return out


def _runner_spans(argv: Sequence[str]) -> tuple[list[tuple[int, int]], str | None]:
    """(start, length) of every ``--runner`` in ``argv`` and the value that counts (the last, as in argparse)."""
    spans: list[tuple[int, int]] = []
    value = None
    i = 0
    while i < len(argv) and argv[i] != "--":
        arg = argv[i]
        if arg.startswith("--runner="):
            spans.append((i, 1))
            value = arg.split("=", 1)[1]
        elif arg == "--runner":
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                raise ValueError("--runner needs a value: a profile name or a Beam runner class")
            spans.append((i, 2))
            value = argv[i + 1]
            i += 1
        i += 1
    return spans, value


def _kept_entries(profile: Profile, argv: Sequence[str]) -> list[tuple[str, Any, str]]:
    """The profile's entries that the flags in ``argv`` do not override."""
    given = _given_flags(argv)
    return [entry for entry in profile._entries(_is_streaming(argv)) if not _overridden(entry[0], given)]


def _beam_runner_class(name: str) -> str | None:
    """The Beam runner class ``name`` selects the way Beam resolves ``--runner``, else None."""
    known = {
        path.rsplit(".", 1)[-1].lower(): path.rsplit(".", 1)[-1] for path in StandardOptions.ALL_KNOWN_RUNNERS
    }
    key = name.lower()
    if key in known:
        return known[key]
    if key + "runner" in known:
        return known[key + "runner"]
    if _DOTTED_CLASS.match(name):
        return name.rsplit(".", 1)[-1]  # a class path, which Beam imports as given
    return None


def apply_profile(argv: Sequence[str], profiles: Mapping[str, Profile] | None = None) -> list[str]:
    """Expand ``--runner PROFILE`` in ``argv`` into the profile's arguments.

    Flags already in ``argv`` win over the profile's (see the module docstring for the
    environment and JVM-property rules); ``--mode stream`` / ``--streaming`` select
    ``streaming_parallelism``. A ``--runner`` naming a Beam runner, or no ``--runner`` at all,
    leaves ``argv`` unchanged. Raises ValueError for a ``--runner`` that is neither, or for a
    placeholder whose environment variable is not set.
    """
    argv = list(argv)
    spans, name = _runner_spans(argv)
    if name is None:
        return argv
    profiles = load_profiles() if profiles is None else profiles
    if name not in profiles:
        if _beam_runner_class(name) is not None:
            return argv
        raise ValueError(
            f"unknown --runner {name!r}: choose a profile ({', '.join(sorted(profiles))}) "
            f"or a Beam runner class ({', '.join(BEAM_RUNNERS)}, ...)"
        )
    profile = profiles[name]
    dropped = {i for start, length in spans for i in range(start, start + length)}
    rest = [arg for i, arg in enumerate(argv) if i not in dropped]
    # The profile's arguments go where the (last) --runner was.
    insert_at = spans[-1][0] - sum(length for start, length in spans[:-1])
    profile_args = _render(_expand(profile, _kept_entries(profile, rest)))
    return rest[:insert_at] + profile_args + rest[insert_at:]


def render_emr_command(
    profile: Profile | str,
    job: str,
    job_args: Sequence[str] = (),
    profiles: Mapping[str, Profile] | None = None,
) -> list[str]:
    """The command an EMR step runs for ``job``: ``riskpipe run JOB ARGS... <profile args> --setup_file``.

    The profile's arguments are written out (the step does not depend on the profiles file on
    the node), flags in ``job_args`` win as in :func:`apply_profile`, and placeholders such as
    the YARN session's ``${RISKPIPE_FLINK_MASTER}`` stay for the step's author to fill in.
    ``--setup_file=./setup.py`` ships riskpipe to the SDK workers: run the step from the
    riskpipe source directory.
    """
    from runners.cli import JOBS  # here, not at import time: the CLI imports this module

    if isinstance(profile, str):
        profile = get_profile(profile, profiles)
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; choose one of: {', '.join(sorted(JOBS))}")
    if profile.runner == "DirectRunner":
        raise ValueError(f"profile {profile.name} runs on DirectRunner; an EMR step runs on Flink")
    args = list(job_args)
    given = _given_flags(args)
    if "runner" in given:
        raise ValueError("the profile sets the runner: drop --runner from the job arguments")
    command = ["riskpipe", "run", job, *args, *_render(_kept_entries(profile, args))]
    if "setup_file" not in given:
        command.append("--setup_file=./setup.py")
    return command


# --- riskpipe profile ... -----------------------------------------------------------------------

USAGE = (
    "usage: riskpipe profile list | show NAME [ARGS...] | flink-conf NAME | emr-command NAME JOB [ARGS...]"
)


def main(argv: Sequence[str] | None = None) -> int:
    """``riskpipe profile``: list profiles, show one's effective options, print an EMR step command.

    ``show NAME [ARGS...]`` prints the arguments ``riskpipe run JOB --runner NAME ARGS...`` would
    run with, one per line (placeholders as written), then the cluster settings no Beam option
    can carry as ``#`` lines. Bad input: one line on stderr, exit 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        action, args = (argv[0], argv[1:]) if argv else ("", [])
        if action == "list" and not args:
            for name, profile in sorted(load_profiles().items()):
                print(f"{name:14s} {profile.runner:15s} {profile.description}")
            return 0
        if action not in ("show", "flink-conf", "emr-command") or not args:
            raise ValueError(USAGE)
        profile = get_profile(args[0])
        if action == "show":
            extra = args[1:]
            for arg in _render(_kept_entries(profile, extra)) + extra:
                print(arg)
            for key, value in profile.flink_conf().items():
                print(f"# cluster config (no Beam option): {key}: {value}")
        elif action == "flink-conf":
            for key, value in profile.flink_conf().items():
                print(f"{key}: {value}")
        elif len(args) < 2:
            raise ValueError("emr-command needs a profile and a job: emr-command NAME JOB [ARGS...]")
        else:
            command = render_emr_command(profile, args[1], args[2:])
            print(shlex.join(command))
            unfilled = sorted({var for arg in command for var in _PLACEHOLDER.findall(arg)})
            if unfilled:
                names = ", ".join(f"${{{var}}}" for var in unfilled)
                print(f"riskpipe profile: note: fill in {names} before the step runs", file=sys.stderr)
        return 0
    except ValueError as err:
        print(f"riskpipe profile: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
