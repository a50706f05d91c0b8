"""Every place qsweep relies on a Ray private name or on undocumented Ray behaviour: one fence.

Nothing else in ``service/``, ``trainers/``, ``analysis/`` or ``contract/`` imports a
``ray.*._internal`` / ``ray._private`` module or a leading-underscore Ray name, or touches Tune's
internal trial and tuner attributes (tests/service/test_ray_compat.py scans every import and
attribute). Each touchpoint below has a canary (``CANARIES``: a check that raises ``RayChanged``
naming the touchpoint and the file that relies on it) and a test ``test_canary_<touchpoint>``.

Importing this module imports no Ray (Ray is imported inside the functions): the Ray-free
``service.failure_text`` (which the results ledger and ``qsweep status`` use) reads Ray's error
wording from here.

Touchpoints (pinned: ``ray[tune,default]>=2.60,<2.61``)

==================================  ========================================================
``count_callbacks_lightly``         ``ray.air._internal.usage._count_callbacks``, called by
                                    ``tag_callbacks`` through the module global; and
                                    ``ray.tune.utils.callback.DEFAULT_CALLBACK_CLASSES``
``shorten_storage_errors``          the loggers of ``ray.tune.execution.experiment_state``,
                                    ``ray.train._internal.syncer``, ``ray.train._internal.storage``
``keep_cloud_keys_out_of_runtime_env``  ``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``
``retry_budget``                    ``trial.max_failures``, ``trial.run_metadata.num_failures``,
                                    ``Trial.should_recover`` and ``TuneController.
                                    _process_trial_failure`` asking only it
``dead_actor_text``                 Ray's English wording of a dead actor (generic first lines,
                                    tab-indented ``pid``/``ip``, the causes raylet/GCS write)
``task_error_text``                 ``str(RayTaskError)``: a ``ray::...`` header, the traceback,
                                    then ``Type: message``
``trial_error_text``                ``trial.error_file`` / ``trial.get_error()`` and the
                                    ``Failure # k (occurred at ...)`` header of Tune's error file
``local_run_config``                ``tuner._local_tuner.get_run_config()`` (restore)
``has_tune_state``                  Tune's on-disk layout: ``tuner.pkl`` and
                                    ``experiment_state-*.json``
``delete_trial_checkpoints``        ``trial.storage.storage_filesystem`` / ``.trial_fs_path`` and
                                    Tune's ``checkpoint_*`` folder names
``quiet_snapshot_sync_warning``     ``TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S``
``grid_order``                      Tune starts pending trials in ``grid_search`` list order
                                    (``service.stage_gate``, ``service.tune_config``)
==================================  ========================================================

Upgrade path
------------
1. Bump the pin in ``pyproject.toml`` (``ray[tune,default]>=X,<Y``) and reinstall.
2. Run ``python -m pytest tests/service/test_ray_compat.py``.
3. Each failing ``test_canary_<touchpoint>`` names a touchpoint above, the Ray name or
   behaviour that changed, and the qsweep file that relies on it. Fix the touchpoint here
   (new name, new wording, or a public API that now exists), then update its canary.
4. Run the whole suite: the canaries say what moved, the feature tests say whether it still works.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import mmap
import os
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

RAY_PIN = "ray[tune,default]>=2.60,<2.61"


class RayChanged(AssertionError):
    """A canary found that Ray no longer has what a touchpoint relies on."""


def _changed(touchpoint: str, relies: str, what: str) -> RayChanged:
    return RayChanged(
        f"ray_compat.{touchpoint} (relied on by {relies}): {what} "
        f"(Ray upgraded? see the upgrade path in service/ray_compat.py)"
    )


def _module(name: str, touchpoint: str, relies: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise _changed(touchpoint, relies, f"module {name} is gone ({err})") from None


def _attr(obj: Any, name: str, touchpoint: str, relies: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        owner = getattr(obj, "__name__", type(obj).__name__)
        raise _changed(touchpoint, relies, f"{owner}.{name} is gone") from None


def _names_used(func: Any) -> set[str]:
    """Global and attribute names a function's code refers to (nested code included)."""
    code, names = getattr(func, "__code__", None), set()
    stack = [code] if code is not None else []
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if hasattr(c, "co_names"))
    return names


# --------------------------------------------------------------------------------------------
# count_callbacks_lightly  (service/tuner.py: build_tuner, restore_tuner)
# --------------------------------------------------------------------------------------------
# At the start of each ``fit()`` Ray Tune tags its usage stats with how many callbacks of each
# built-in class the run has (``ray.air._internal.usage.tag_callbacks``). To know those classes
# it imports its MLflow, W&B and Comet integrations, which import mlflow, wandb and comet_ml
# whenever they are installed: measured on the quick sweep, ~0.9 s of the driver's CPU at the
# start of ``fit()`` (driver CPU over the fit 2.6 -> 1.8 s), paid by every sweep on an install
# with the tracking extras, whether its spec names a tracker or not. Counting by class name
# gives Ray the same tag without them.

_USAGE_MODULE = "ray.air._internal.usage"
_RELIES_USAGE = "service/tuner.py (build_tuner, restore_tuner)"

# Ray's built-in tracker callbacks, by name (their modules are what must not be imported).
TRACKER_CALLBACKS = (
    "WandbLoggerCallback",
    "MLflowLoggerCallback",
    "CometLoggerCallback",
    "AimLoggerCallback",
)


def count_callbacks_by_name(callbacks: list[Any] | None) -> dict[str, int]:
    """What Ray's ``_count_callbacks`` returns, from class names instead of classes."""
    from ray.tune import Callback
    from ray.tune.logger import LoggerCallback
    from ray.tune.utils.callback import DEFAULT_CALLBACK_CLASSES

    built_in = {*TRACKER_CALLBACKS, *(cls.__name__ for cls in DEFAULT_CALLBACK_CLASSES)}
    counts: dict[str, int] = defaultdict(int)
    for callback in callbacks or []:
        if not isinstance(callback, Callback):
            continue
        name = type(callback).__name__
        if name in built_in:
            counts[name] += 1
        elif isinstance(callback, LoggerCallback):
            counts["CustomLoggerCallback"] += 1
        else:
            counts["CustomCallback"] += 1
    return counts


def count_callbacks_lightly() -> None:
    """Make Ray count a run's callbacks with ``count_callbacks_by_name``. Where a Ray release
    no longer has the function, nothing changes (Ray's own counting stays; the canary fails)."""
    try:
        usage = importlib.import_module(_USAGE_MODULE)
    except ImportError:
        return
    if callable(getattr(usage, "_count_callbacks", None)):
        usage._count_callbacks = count_callbacks_by_name


def _rays_own_callback_counting() -> Callable[[list[Any]], dict[str, int]]:
    """Ray's ``_count_callbacks`` from a fresh copy of its module (this process may have
    replaced the loaded one's)."""
    spec = importlib.util.find_spec(_USAGE_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._count_callbacks


def _canary_count_callbacks_lightly() -> None:
    name, relies = "count_callbacks_lightly", _RELIES_USAGE
    usage = _module(_USAGE_MODULE, name, relies)
    if not callable(getattr(usage, "_count_callbacks", None)):
        raise _changed(name, relies, f"{_USAGE_MODULE}._count_callbacks is gone")
    if "_count_callbacks" not in _names_used(_attr(usage, "tag_callbacks", name, relies)):
        raise _changed(
            name, relies, f"{_USAGE_MODULE}.tag_callbacks no longer calls _count_callbacks"
        )
    callback_module = _module("ray.tune.utils.callback", name, relies)
    _attr(callback_module, "DEFAULT_CALLBACK_CLASSES", name, relies)
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, LoggerCallback

    class _Logger(LoggerCallback):
        pass

    sample = [tune.Callback(), _Logger(), CSVLoggerCallback(), "not a callback"]
    ours, theirs = dict(count_callbacks_by_name(sample)), dict(usage._count_callbacks(sample))
    if usage._count_callbacks is count_callbacks_by_name:  # already replaced in this process
        theirs = dict(_rays_own_callback_counting()(sample))
    if ours != theirs:
        raise _changed(name, relies, f"Ray counts callbacks differently: {theirs} != ours {ours}")


# --------------------------------------------------------------------------------------------
# shorten_storage_errors  (service/tuner.py: build_tuner, restore_tuner)
# --------------------------------------------------------------------------------------------
# When the results location fills up (or turns read-only), Ray Tune logs its failed experiment
# snapshot at ERROR with the whole Python traceback of its syncer. qsweep already stops the
# sweep with its own one-line ``error:`` that names the path and how to resume; a 20-line
# traceback from Ray's internals above it reads as a crash. This filter keeps Ray's line and the
# reason (``[Errno 28] ... No space left on device``) and drops the traceback, for OS errors
# only: any other exception in those loggers is left exactly as Ray wrote it.

_RELIES_LOGS = "service/tuner.py (build_tuner, restore_tuner)"

# The Ray loggers that report a failed write to the experiment's storage (module names).
STORAGE_LOGGERS = (
    "ray.tune.execution.experiment_state",
    "ray.train._internal.syncer",
    "ray.train._internal.storage",
)


class OneLineStorageErrors(logging.Filter):
    """Turn a record carrying an ``OSError`` traceback into its message plus the error's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError):
            record.msg = f"{record.getMessage().rstrip(': ')}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER = OneLineStorageErrors()


def shorten_storage_errors() -> None:
    """Install the filter on Ray's storage loggers (idempotent)."""
    for name in STORAGE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _canary_shorten_storage_errors() -> None:
    name, relies = "shorten_storage_errors", _RELIES_LOGS
    for module_name in STORAGE_LOGGERS:
        module = _module(module_name, name, relies)
        logger = getattr(module, "logger", None)
        if not isinstance(logger, logging.Logger) or logger.name != module_name:
            raise _changed(
                name, relies, f"{module_name} no longer logs to logging.getLogger({module_name!r})"
            )


# --------------------------------------------------------------------------------------------
# keep_cloud_keys_out_of_runtime_env  (service/credentials.py, for service/tuner.py)
# --------------------------------------------------------------------------------------------

_CLASS_CACHE = "ray.tune.execution.class_cache"
_RELIES_KEYS = "service/credentials.py (keep_cloud_keys_out_of_runtime_env, from service/tuner.py)"


def drop_propagated_env_vars(names: frozenset[str] | set[str]) -> None:
    """Remove ``names`` from the variables Tune copies from the driver's environment into every
    trainable's runtime env (``class_cache.ENV_VARS_TO_PROPAGATE``)."""
    class_cache = importlib.import_module(_CLASS_CACHE)
    propagated = class_cache.ENV_VARS_TO_PROPAGATE
    if isinstance(propagated, set):
        propagated.difference_update(names)
    else:  # a future Ray may make it immutable: replace it
        class_cache.ENV_VARS_TO_PROPAGATE = type(propagated)(set(propagated) - set(names))


def _canary_keep_cloud_keys_out_of_runtime_env() -> None:
    name, relies = "keep_cloud_keys_out_of_runtime_env", _RELIES_KEYS
    class_cache = _module(_CLASS_CACHE, name, relies)
    _attr(class_cache, "ENV_VARS_TO_PROPAGATE", name, relies)
    cache = _attr(class_cache, "_ActorClassCache", name, relies)
    if "ENV_VARS_TO_PROPAGATE" not in _names_used(_attr(cache, "get", name, relies)):
        raise _changed(
            name,
            relies,
            f"{_CLASS_CACHE}._ActorClassCache.get no longer reads "
            "ENV_VARS_TO_PROPAGATE (where do cloud keys come from now?)",
        )


# --------------------------------------------------------------------------------------------
# retry_budget  (service/failures.py: FailOnce)
# --------------------------------------------------------------------------------------------
# Ray Tune retries every failed trial up to ``FailureConfig(max_failures)`` and has no
# per-exception filter: ``TuneController._process_trial_failure`` calls ``trial.handle_error``
# (which counts ``trial.run_metadata.num_failures``) and then asks only ``Trial.should_recover()``
# (``num_failures <= max_failures``). So lowering a trial's ``max_failures`` to the failures it
# already had makes Tune end it at the coming failure.

_RELIES_RETRY = "service/failures.py (FailOnce)"


def set_retry_budget(trial: Any, retries: int) -> None:
    """Let Tune retry ``trial`` up to ``retries`` failures (over all its attempts)."""
    trial.max_failures = retries


def no_more_retries(trial: Any) -> None:
    """Make the trial's coming failure its last: Tune records it ERROR, no retry."""
    trial.max_failures = trial.run_metadata.num_failures  # the coming failure exceeds it


def _canary_retry_budget() -> None:
    name, relies = "retry_budget", _RELIES_RETRY
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

    process = _attr(TuneController, "_process_trial_failure", name, relies)
    used = _names_used(process)
    if not {"handle_error", "should_recover"} <= used:
        raise _changed(
            name,
            relies,
            "TuneController._process_trial_failure no longer asks "
            "trial.handle_error + trial.should_recover (has Tune a per-exception retry rule now?)",
        )
    trial = Trial("canary", stub=True, max_failures=0)
    metadata = _attr(trial, "run_metadata", name, relies)
    if not isinstance(getattr(metadata, "num_failures", None), int):
        raise _changed(name, relies, "Trial.run_metadata.num_failures is gone")
    metadata.num_failures = 2
    no_more_retries(trial)
    if not trial.should_recover():
        raise _changed(name, relies, "Trial.should_recover() refuses a trial with failures left")
    metadata.num_failures += 1  # what handle_error does for the coming failure
    if trial.should_recover():
        raise _changed(
            name,
            relies,
            "Trial.should_recover() retries past trial.max_failures "
            "(num_failures <= max_failures no longer the rule)",
        )


# --------------------------------------------------------------------------------------------
# dead_actor_text, task_error_text  (service/failure_text.py: summarize, for the ledger/sink)
# --------------------------------------------------------------------------------------------
# Ray's English wording, spelled out so the Ray-free ``service.failure_text`` can read a failure
# from the text Tune recorded.

_RELIES_TEXT = "service/failure_text.py (summarize)"

DEAD_ACTOR_PREFIX = "The actor "  # str(RayActorError) and str(ActorDiedError) start so
# Ray's generic first line of a dead actor's error (``RayActorError.BASE_ERROR_MSG`` and
# ``ActorDiedError.BASE_ERROR_MSG``); a dead actor's reason skips it for the line that says
# what happened.
GENERIC_ACTOR_LINES = frozenset(
    {
        "The actor experienced an error before finishing this task.",
        "The actor died unexpectedly before finishing this task.",
    }
)
# What happened to a dead actor, by the fragments of the cause Ray's raylet / GCS wrote (first
# match wins; none: "worker died").
ACTOR_DEATH_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("out of memory", ("NODE_OUT_OF_MEMORY", "running low on memory")),
    ("node lost", ("its node has died",)),
    ("actor killed", ("killed by `ray.kill`",)),
)
ACTOR_DEATH_ADVICE = " Some common causes include"  # Ray's guesses, not what happened
# The tab-indented ``key: value`` lines of a dead actor's error that say where it ran.
ACTOR_PID_KEY, ACTOR_IP_KEY = "pid", "ip"
# An exception the trainable raised (``RayTaskError``) reads ``ray::<proctitle> (pid=, ip=)``
# (the proctitle ANSI-coloured), then its traceback, then ``module.Type: message``.
RAY_TASK_HEADER = re.compile(r"^(\x1b\[[0-9;]*m)?ray::\S+")

# Where Ray's native processes keep the English of a dead actor's cause.
_RAY_BINARIES = ("core/src/ray/raylet/raylet", "core/src/ray/gcs/gcs_server", "_raylet.so")


def _ray_binaries() -> list[Path]:
    spec = importlib.util.find_spec("ray")
    root = Path(spec.origin).parent if spec and spec.origin else None
    return [root / rel for rel in _RAY_BINARIES if root and (root / rel).is_file()]


def _in_ray_binaries(fragments: list[str]) -> set[str]:
    """The fragments found in Ray's native binaries."""
    found: set[str] = set()
    for path in _ray_binaries():
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found.update(frag for frag in fragments if data.find(frag.encode()) >= 0)
    return found


def _canary_dead_actor_text() -> None:
    name, relies = "dead_actor_text", _RELIES_TEXT
    from ray.core.generated.common_pb2 import ActorDiedErrorContext, WorkerExitType
    from ray.exceptions import ActorDiedError, RayActorError

    generic = {
        _attr(RayActorError, "BASE_ERROR_MSG", name, relies),
        _attr(ActorDiedError, "BASE_ERROR_MSG", name, relies),
    }
    if generic != GENERIC_ACTOR_LINES:
        raise _changed(name, relies, f"Ray's generic dead-actor lines are now {sorted(generic)}")
    if not all(line.startswith(DEAD_ACTOR_PREFIX) for line in generic):
        raise _changed(name, relies, f"a dead actor's error no longer starts {DEAD_ACTOR_PREFIX!r}")
    text = str(
        ActorDiedError(
            ActorDiedErrorContext(
                class_name="Canary",
                actor_id=b"\1" * 16,
                pid=4242,
                node_ip_address="10.0.0.7",
                error_message="the cause",
            )
        )
    )
    lines = text.splitlines()
    if (
        f"\t{ACTOR_PID_KEY}: 4242" not in lines
        or f"\t{ACTOR_IP_KEY}: 10.0.0.7" not in lines
        or lines[-1] != "the cause"
    ):
        raise _changed(
            name, relies, f"a dead actor's error no longer lists tab-indented pid/ip: {text!r}"
        )
    if "NODE_OUT_OF_MEMORY" not in WorkerExitType.keys():
        raise _changed(name, relies, "WorkerExitType.NODE_OUT_OF_MEMORY is gone")
    wanted = [
        frag for _, frags in ACTOR_DEATH_KINDS for frag in frags if frag != "NODE_OUT_OF_MEMORY"
    ] + [ACTOR_DEATH_ADVICE]
    missing = sorted(set(wanted) - _in_ray_binaries(wanted))
    if missing:
        raise _changed(
            name,
            relies,
            f"Ray's native binaries ({', '.join(_RAY_BINARIES)}) no longer write {missing}",
        )


def _canary_task_error_text() -> None:
    name, relies = "task_error_text", _RELIES_TEXT
    import traceback

    from ray.exceptions import RayTaskError

    try:
        raise ValueError("canary message")
    except ValueError as caught:
        err = RayTaskError(
            "train",
            traceback.format_exc(),
            caught,
            proctitle="ray::ImplicitFunc.train()",
            pid=7,
            ip="127.0.0.1",
        ).as_instanceof_cause()
    lines = [line for line in str(err).splitlines() if line.strip()]
    if not lines or not RAY_TASK_HEADER.match(lines[0]):
        raise _changed(name, relies, f"str(RayTaskError) no longer starts 'ray::': {str(err)!r}")
    if not any(line.startswith('  File "') for line in lines) or not lines[-1].endswith(
        "ValueError: canary message"
    ):
        raise _changed(
            name, relies, f"str(RayTaskError) no longer ends traceback + 'Type: message': {lines}"
        )


# --------------------------------------------------------------------------------------------
# trial_error_text  (service/sink.py: trial_error_text, used by ParquetSink and StageFailures)
# --------------------------------------------------------------------------------------------

_RELIES_ERROR = "service/sink.py (trial_error_text), service/tuner.py (StageFailures)"
FAILURE_HEADER = "Failure # "  # Tune's header of each failure in a trial's error file
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_ERROR_CHARS = 20_000  # a Ray traceback can be long; the message is at its end


def trial_error_text(trial: Any) -> str | None:
    """The latest failure of ``trial`` as Tune recorded it (traceback and exception message).

    In Ray 2.60 ``Trial.handle_error`` appends ``Failure # k (occurred at ...)`` and
    ``str(exc)`` to ``trial.error_file`` on the driver just before ``on_trial_error`` /
    ``on_trial_recover`` run, so that local file is read first; ``get_error`` (the synced
    copy in storage) is the fallback. Never ``get_pickled_error``: it unpickles a file from
    the results location. None if Tune has nothing.
    """
    readers = (lambda: Path(trial.error_file).read_text(errors="replace"), trial.get_error)
    text = None
    for read in readers:
        try:
            found = read()
        except Exception:  # noqa: BLE001 - no file, no storage context, storage unreachable: next
            found = None
        if found:
            text = str(found)
            break
    if not text:
        return None
    text = _ANSI.sub("", text)  # Ray colours the actor name in tracebacks
    last = text.rsplit(FAILURE_HEADER, 1)[-1]
    header, _, body = last.partition("\n")
    if header[:1].isdigit():
        last = body  # drop the "Failure # k (occurred at ...)" header
    return (last.strip() or text.strip())[-_MAX_ERROR_CHARS:]


def _canary_trial_error_text() -> None:
    import inspect

    name, relies = "trial_error_text", _RELIES_ERROR
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

    if not isinstance(getattr(Trial, "error_file", None), property):
        raise _changed(name, relies, "Trial.error_file (a property) is gone")
    _attr(Trial, "get_error", name, relies)
    source = inspect.getsource(_attr(Trial, "handle_error", name, relies))
    if f'"{FAILURE_HEADER}{{}} (occurred at {{}})' not in source or "self.error_file" not in source:
        raise _changed(
            name,
            relies,
            "Trial.handle_error no longer appends 'Failure # k (occurred at ...)' "
            "and str(exc) to trial.error_file",
        )
    if "handle_error" not in _names_used(
        _attr(TuneController, "_process_trial_failure", name, relies)
    ):
        raise _changed(
            name,
            relies,
            "TuneController._process_trial_failure no longer writes the error "
            "(trial.handle_error) before on_trial_error",
        )


# --------------------------------------------------------------------------------------------
# local_run_config  (service/tuner.py: restore_tuner)
# --------------------------------------------------------------------------------------------

_RELIES_RESTORE = "service/tuner.py (restore_tuner)"


def local_run_config(tuner: Any) -> Any:
    """The run config a restored ``Tuner`` will fit with (the same object: change it in place,
    e.g. its ``callbacks``). Not under Ray Client (``ray://``), where the tuner is remote."""
    return tuner._local_tuner.get_run_config()


def _canary_local_run_config() -> None:
    name, relies = "local_run_config", _RELIES_RESTORE
    from ray import tune

    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="canary"))
    inner = _attr(tuner, "_local_tuner", name, relies)
    _attr(inner, "get_run_config", name, relies)
    run_config = local_run_config(tuner)
    if not isinstance(run_config, tune.RunConfig) or run_config.name != "canary":
        raise _changed(name, relies, "Tuner._local_tuner.get_run_config() is not the RunConfig")
    if local_run_config(tuner) is not run_config:
        raise _changed(
            name,
            relies,
            "Tuner._local_tuner.get_run_config() returns a copy: changing it in "
            "place no longer reaches fit()",
        )


# --------------------------------------------------------------------------------------------
# has_tune_state  (service/tuner.py: tune_state_exists, for service/runner.py)
# --------------------------------------------------------------------------------------------

_RELIES_STATE = "service/tuner.py (tune_state_exists), service/runner.py (resume)"
TUNER_PICKLE = "tuner.pkl"  # what Tuner.restore reads first
SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX = "experiment_state", ".json"  # experiment_state-<date>.json


def tune_state_files(fs: Any, path: str) -> tuple[str, list[str]]:
    """(``tuner.pkl``'s path, the experiment snapshots' paths sorted by name) in Tune's
    experiment folder ``path`` on pyarrow filesystem ``fs``."""
    import pyarrow.fs as pafs

    snapshots = sorted(
        entry.path
        for entry in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        if entry.base_name.startswith(SNAPSHOT_PREFIX) and entry.base_name.endswith(SNAPSHOT_SUFFIX)
    )
    return f"{path}/{TUNER_PICKLE}", snapshots


def has_tune_state(fs: Any, path: str) -> bool:
    """Whether Tune saved enough of an experiment at ``path`` to restore it: ``tuner.pkl`` and a
    readable experiment snapshot (Tune restores the newest by name). A driver that died, or ran
    out of disk, before Tune's first snapshot leaves ``tuner.pkl`` alone or a truncated
    snapshot; restoring that makes Tune log a traceback and restart the experiment."""
    import pyarrow.fs as pafs

    pickled = fs.get_file_info(f"{path}/{TUNER_PICKLE}")
    if pickled.type != pafs.FileType.File or not pickled.size:
        return False
    _, snapshots = tune_state_files(fs, path)
    if not snapshots:
        return False
    try:
        with fs.open_input_stream(snapshots[-1]) as stream:
            json.loads(stream.readall())
    except (OSError, ValueError):
        return False
    return True


def _canary_has_tune_state() -> None:
    name, relies = "has_tune_state", _RELIES_STATE
    tuner_internal = _module("ray.tune.impl.tuner_internal", name, relies)
    if _attr(tuner_internal, "_TUNER_PKL", name, relies) != TUNER_PICKLE:
        raise _changed(name, relies, f"Tune's tuner pickle is now {tuner_internal._TUNER_PKL!r}")
    from ray.tune.execution.tune_controller import TuneController

    template = _attr(TuneController, "CKPT_FILE_TMPL", name, relies)
    prefix, _, suffix = template.partition("{}")
    if not (prefix.startswith(SNAPSHOT_PREFIX) and suffix == SNAPSHOT_SUFFIX):
        raise _changed(name, relies, f"Tune's experiment snapshots are now named {template!r}")


# --------------------------------------------------------------------------------------------
# delete_trial_checkpoints  (service/tuner.py: PruneCheckpoints)
# --------------------------------------------------------------------------------------------

_RELIES_PRUNE = "service/tuner.py (PruneCheckpoints)"
CHECKPOINT_PREFIX = "checkpoint_"  # Tune's checkpoint folders: checkpoint_000000, ...


def trial_checkpoint_dirs(trial: Any) -> tuple[Any, list[str]]:
    """(the trial's storage filesystem, its ``checkpoint_*`` folders there). Raises ``OSError``
    / ``RuntimeError`` where storage is unreachable or the trial has no folder."""
    import pyarrow.fs as pafs

    fs, trial_dir = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    return fs, [
        entry.path
        for entry in fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
        if entry.type == pafs.FileType.Directory and entry.base_name.startswith(CHECKPOINT_PREFIX)
    ]


def delete_trial_checkpoints(trial: Any) -> None:
    """Delete the trial's checkpoint folders; keep them where storage is unreachable or the
    trial has no folder."""
    try:
        fs, dirs = trial_checkpoint_dirs(trial)
        for path in dirs:
            fs.delete_dir(path)
    except (OSError, RuntimeError):
        pass


def _canary_delete_trial_checkpoints() -> None:
    name, relies = "delete_trial_checkpoints", _RELIES_PRUNE
    storage = _module("ray.train._internal.storage", name, relies)
    context = _attr(storage, "StorageContext", name, relies)
    if not isinstance(getattr(context, "trial_fs_path", None), property):
        raise _changed(name, relies, "StorageContext.trial_fs_path (a property) is gone")
    if "storage_filesystem" not in _names_used(context.__init__):
        raise _changed(name, relies, "StorageContext.storage_filesystem is gone")
    make_name = _attr(context, "_make_checkpoint_dir_name", name, relies)
    if not make_name(0).startswith(CHECKPOINT_PREFIX):
        raise _changed(name, relies, f"Tune's checkpoint folders are now named {make_name(0)!r}")
    from ray.tune.experiment import Trial

    if "storage" not in _names_used(Trial.__init__):
        raise _changed(name, relies, "Trial.storage is gone")


# --------------------------------------------------------------------------------------------
# quiet_snapshot_sync_warning  (service/runner.py: connect)
# --------------------------------------------------------------------------------------------

_RELIES_SYNC = "service/runner.py (connect)"
SNAPSHOT_SYNC_WARNING_ENV = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"


def quiet_snapshot_sync_warning() -> None:
    """Tune warns on every forced experiment snapshot (one per checkpoint with num_to_keep);
    for many short trials that is all noise. Before Ray is imported; the user's value stays."""
    os.environ.setdefault(SNAPSHOT_SYNC_WARNING_ENV, "0")


def _canary_quiet_snapshot_sync_warning() -> None:
    name, relies = "quiet_snapshot_sync_warning", _RELIES_SYNC
    constants = _module("ray.tune.constants", name, relies)
    if SNAPSHOT_SYNC_WARNING_ENV not in _attr(constants, "TUNE_ENV_VARS", name, relies):
        raise _changed(name, relies, f"Tune no longer lists {SNAPSHOT_SYNC_WARNING_ENV}")
    spec = importlib.util.find_spec("ray.tune.execution.experiment_state")
    if spec is None or SNAPSHOT_SYNC_WARNING_ENV not in Path(spec.origin).read_text():
        raise _changed(
            name,
            relies,
            f"ray.tune.execution.experiment_state no longer reads {SNAPSHOT_SYNC_WARNING_ENV}",
        )


# --------------------------------------------------------------------------------------------
# grid_order  (service/stage_gate.py, service/tune_config.py: encode(with_stage=True))
# --------------------------------------------------------------------------------------------
# ``service.stage_gate`` puts a grid sweep's pre-training trials first in its one
# ``grid_search`` list and lets fine-tuning trials wait, inside their trainable, for their
# stage's model. That never starves the stage only because Tune creates grid trials and starts
# pending trials in the order of the ``grid_search`` list (a behaviour Tune does not document).
# The canary is a real small Tune run (tests/service/test_ray_compat.py) checked with
# ``check_grid_order``.

_RELIES_GRID = "service/stage_gate.py, service/tune_config.py (encode with_stage)"


def check_grid_order(started: list[Any], grid: list[Any]) -> None:
    """Raise ``RayChanged`` unless trials started in ``grid_search`` list order."""
    if list(started) != list(grid):
        raise _changed(
            "grid_order",
            _RELIES_GRID,
            f"Tune started grid trials in the order {list(started)}, not the grid's {list(grid)}",
        )


# The static canaries: each raises ``RayChanged`` naming its touchpoint. ``grid_order`` needs a
# Tune run: tests/service/test_ray_compat.py runs one and calls ``check_grid_order``.
CANARIES: dict[str, Callable[[], None]] = {
    "count_callbacks_lightly": _canary_count_callbacks_lightly,
    "shorten_storage_errors": _canary_shorten_storage_errors,
    "keep_cloud_keys_out_of_runtime_env": _canary_keep_cloud_keys_out_of_runtime_env,
    "retry_budget": _canary_retry_budget,
    "dead_actor_text": _canary_dead_actor_text,
    "task_error_text": _canary_task_error_text,
    "trial_error_text": _canary_trial_error_text,
    "local_run_config": _canary_local_run_config,
    "has_tune_state": _canary_has_tune_state,
    "delete_trial_checkpoints": _canary_delete_trial_checkpoints,
    "quiet_snapshot_sync_warning": _canary_quiet_snapshot_sync_warning,
}
TOUCHPOINTS = (*CANARIES, "grid_order")
