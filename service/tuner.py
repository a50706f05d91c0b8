"""Run a sweep on Ray Tune: one Tune trial per planned trial, each calling ``run_trial``.

The trainable hands its evaluations to ``tune.report`` in batches (``service.report_batch``)
and (every ``checkpoint_every`` evaluations, at most one per ``checkpoint_min_s``) a
checkpoint holding ``run_trial``'s resume state, so a trial interrupted by a node loss or a
driver crash continues mid-run. Tune's own state
lives in ``<results>/<sweep>/tune`` next to the Parquet, which is what ``resume`` reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
import time
from typing import Any

import pyarrow as pa
import ray
import torch
from ray import tune
from ray.tune.logger import TBXLoggerCallback
from ray.tune.schedulers import ASHAScheduler

from contract import storage
from service import failures
from service.credentials import keep_cloud_keys_out_of_runtime_env
from service.errors import SweepError
from service.limits import LimitWatchdog
from service.plan import STAGE_PREFIX, SweepPlan
from service.protocol import (
    PROTOCOL_KEY,
    TUNED,
    TUNED_CONFIG_KEY,
    TUNING,
    apply_settings,
    record_score,
    split_protocol,
    tuned_settings,
    tuning_ids,
)
from service.ray_compat import (
    count_callbacks_lightly,
    delete_trial_checkpoints,
    has_tune_state,
    local_run_config,
    shorten_storage_errors,
)
from service.report_batch import REPORT_EVERY_S, ReportBatcher, newest, rows
from service.stage_gate import mark_failed, stage_model_path, wait_for_stage
from service.trial_index import TrialIndex
from service.tune_config import decode, encode
from trainers import run_trial

TUNE_DIR = "tune"  # experiment name under the sweep directory
# Where qsweep before the one-run stage ran the pre-training stage: such folders are refused.
SEPARATE_STAGE_DIR = "tune-pretrain"
STATE_FILE = "state.pt"


def stage_location(sweep_dir: str, value: str | None) -> str | None:
    """``stage:<trial id>`` -> that trial's model checkpoint under ``<sweep>/stages/``."""
    if not value or not value.startswith(STAGE_PREFIX):
        return value
    return stage_model_path(sweep_dir, value.removeprefix(STAGE_PREFIX))


@dataclasses.dataclass(frozen=True)
class TrialRuntime:
    """What every trial of a sweep runs with besides its own config (``make_trainable``)."""

    planned: dict[str, dict[str, Any]]  # planned trial id -> trial config (plain data)
    sweep_dir: str
    checkpoint_every: int
    checkpoint_min_s: float = 0.0
    cpus: float = 1.0
    time_limit_s: float | None = None
    memory_limit_mb: float | None = None
    metric: str | None = None  # the failure record's metric (a failed trial reports it)
    report_every_s: float = REPORT_EVERY_S


def train_one(config: dict[str, Any], runtime: TrialRuntime) -> None:
    """Tune function trainable: resolve the trial, resume from a checkpoint if any, train
    (once its pre-training stage's model exists, ``service.stage_gate``, and, for a tuning
    protocol's re-run, once its arm's tuning trials have scores, ``service.protocol``; within
    the spec's time and memory limits, see ``service.limits``), handing evaluations to Tune in
    batches (``service.report_batch``). Whatever is pending is sent before an error leaves. A
    deterministic failure (a divergence, a configuration error) is reported before it is
    raised, so Tune does not retry it (``service.failures``)."""
    batcher = ReportBatcher(
        lambda result, checkpoint: tune.report(result, checkpoint=checkpoint),
        runtime.report_every_s,
    )
    sweep_dir = runtime.sweep_dir
    this = runtime.planned.get(config.get("planned_id"), {})
    role = this.get(PROTOCOL_KEY) or {}
    try:
        start_from = this.get("init_from") or ""
        if start_from.startswith(STAGE_PREFIX):  # one Tune run with its stage (service.stage_gate)
            wait_for_stage(sweep_dir, start_from.removeprefix(STAGE_PREFIX))
        tuned = None
        if role.get("role") == TUNED:  # its arm's best tuning settings (service.protocol)
            group = role["group"]
            ids = tuning_ids(runtime.planned, group)
            tuned = tuned_settings(sweep_dir, group, ids, role["direction"])
        with LimitWatchdog(runtime.time_limit_s, runtime.memory_limit_mb) as limits:
            _train_one(config, runtime, limits, batcher, tuned)
    except Exception as err:
        try:
            batcher.flush()  # the rows before the failure are results too
        except Exception:  # noqa: BLE001 - the session is gone: the original error matters
            pass
        if not failures.is_deterministic(err):
            raise
        if role.get("role") == TUNING:  # not retried: it ranks last among its arm's settings
            record_score(sweep_dir, role["group"], config["planned_id"], None, role["settings"])
        tune.report(failures.failure_result(err, runtime.metric))
        raise


def _train_one(
    config: dict[str, Any],
    runtime: TrialRuntime,
    limits: LimitWatchdog,
    batcher: ReportBatcher,
    tuned: tuple[dict[str, Any], str] | None = None,
) -> None:
    planned, sweep_dir = runtime.planned, runtime.sweep_dir
    checkpoint_every, checkpoint_min_s = runtime.checkpoint_every, runtime.checkpoint_min_s
    trial_id, trial_config = decode(planned, config, tune.get_context().get_trial_id())
    chosen = None
    if tuned is not None:  # a re-run: its arm's best settings, and its row says which
        trial_config = apply_settings(trial_config, tuned[0])
        trial_config[PROTOCOL_KEY] = {**trial_config[PROTOCOL_KEY], "tuned_by": tuned[1]}
        chosen = json.dumps(trial_config, sort_keys=True, default=str)
    trial_config, role = split_protocol(trial_config)
    for key in ("init_from", "save_model_to"):  # stage hand-over goes through the results location
        if key in trial_config:
            trial_config[key] = stage_location(sweep_dir, trial_config[key])
    trial_config.setdefault("threads", max(1, int(runtime.cpus)))  # not every core for one trial
    resume_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = torch.load(os.path.join(directory, STATE_FILE), weights_only=False)
    where = {
        "trial_id": trial_id,
        "host": socket.gethostname(),
        "node_id": ray.get_runtime_context().get_node_id(),
    }
    evaluations, checkpointed_at = 0, time.monotonic()

    def report(metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        """A checkpoint every ``checkpoint_every`` evaluations, but none sooner than
        ``checkpoint_min_s`` after the attempt's start or the previous one (a short trial
        restarts from scratch more cheaply than it saves), and none at the end (the finished
        trial's checkpoints are deleted, ``PruneCheckpoints``)."""
        nonlocal evaluations, checkpointed_at
        limits.check()  # an evaluation past a limit is not reported: the attempt fails
        if metrics["done"] and role.get("role") == TUNING:
            # its validation score for the arm's re-runs, before Tune sees done and ends it
            record_score(
                sweep_dir, role["group"], trial_id, metrics.get(role["metric"]), role["settings"]
            )
        evaluations += 1
        nonlocal chosen
        payload = {**metrics, **where}
        if chosen is not None:  # the ledger rewrites the row's settings once (TUNED_CONFIG_KEY)
            payload[TUNED_CONFIG_KEY], chosen = chosen, None
        due = (
            state is not None
            and not metrics["done"]
            and evaluations % checkpoint_every == 0
            and time.monotonic() - checkpointed_at >= checkpoint_min_s
        )
        if not due:
            batcher.add(payload, last=bool(metrics["done"]))
            return
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, os.path.join(directory, STATE_FILE))
            batcher.add(payload, checkpoint=tune.Checkpoint.from_directory(directory))
        checkpointed_at = time.monotonic()

    run_trial(trial_config, report, resume_state=resume_state, save_state=checkpoint_every > 0)


def make_trainable(plan: SweepPlan, sweep_dir: str):
    spec = plan.spec
    keep_cloud_keys_out_of_runtime_env()  # Ray would log them in plain text (service.credentials)
    runtime = TrialRuntime(
        planned=plan.planned,
        sweep_dir=sweep_dir,
        checkpoint_every=spec.checkpoint_every,
        checkpoint_min_s=spec.checkpoint_min_s,
        cpus=spec.resources.cpus,
        time_limit_s=spec.time_limit_s,
        memory_limit_mb=spec.memory_limit_mb,
        metric=spec.search.metric,
        report_every_s=0.0 if spec.early_stopping is not None else REPORT_EVERY_S,  # ASHA counts
    )
    trainable = tune.with_parameters(train_one, runtime=runtime)
    return tune.with_resources(trainable, {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus})


def build_tuner(
    plan: SweepPlan,
    sweep_dir: str,
    callbacks: list[tune.Callback],
    skip: set[str] | frozenset[str] = frozenset(),
    trainable: Any = None,
) -> tune.Tuner:
    """The sweep's one Tune run: its pre-training stage and tuning protocol included, in one
    grid (``service.tune_config.encode``). Planned trials in ``skip`` (already finished, grid
    mode) are left out. ``trainable`` replaces ``make_trainable``'s (resources included): the
    load benchmark (``benchmarks.scale``) runs a trivial one."""
    shorten_storage_errors()
    count_callbacks_lightly()  # Ray would import mlflow and wandb to count callbacks
    spec = plan.spec
    space, search, num_samples = encode(plan, skip)
    scheduler = None
    if spec.early_stopping is not None:
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            grace_period=spec.early_stopping.grace_period,
            reduction_factor=spec.early_stopping.reduction_factor,
        )
    needs_metric = search is not None or scheduler is not None
    return tune.Tuner(
        make_trainable(plan, sweep_dir) if trainable is None else trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=spec.search.metric if needs_metric else None,
            mode=spec.search.direction if needs_metric else None,
            search_alg=search,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=spec.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=sweep_dir,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # see PruneCheckpoints
            callbacks=callback_list(plan, sweep_dir, callbacks),
        ),
    )


def callback_list(
    plan: SweepPlan, sweep_dir: str, callbacks: list[tune.Callback]
) -> list[tune.Callback]:
    """Every Tune callback of a sweep, in order: the caller's (the Parquet sink first, then
    progress), the stage and tuning hand-over, checkpoint pruning, the retry filter,
    TensorBoard, then the spec's trackers (they see every result once it is written)."""
    return [
        *callbacks,
        StageFailures(plan, sweep_dir),
        PruneCheckpoints(),
        failures.FailOnce(plan.spec.retries),
        BatchedTBXLogger(),
        *_trackers(plan, sweep_dir, _shared_index(callbacks)),
    ]


def _shared_index(callbacks: list[tune.Callback]) -> TrialIndex | None:
    """The trial index the caller's callbacks share (``service.runner._callbacks``)."""
    found = (getattr(c, "index", None) for c in callbacks)
    return next((i for i in found if isinstance(i, TrialIndex)), None)


def tuner_for(
    plan: SweepPlan,
    sweep_dir: str,
    callbacks: list[tune.Callback],
    skip: set[str] | frozenset[str] = frozenset(),
    retry_failed: bool = False,
) -> tune.Tuner:
    """The sweep's Tune run: restored where Tune saved enough state (``tune_state_exists``),
    else built afresh without the ``skip``ped, finished trials."""
    if tune_state_exists(sweep_dir):
        return restore_tuner(plan, sweep_dir, callbacks, retry_failed, skip)
    return build_tuner(plan, sweep_dir, callbacks, skip)


def _trackers(
    plan: SweepPlan, sweep_dir: str, index: TrialIndex | None = None
) -> list[tune.Callback]:
    """The spec's experiment trackers (``service.tracking``), after the Parquet sink: they
    see every result once it is written, and a tracker's failure stays its own."""
    if plan.spec.tracking is None or not plan.spec.tracking.names():
        return []
    from service.tracking import tracker_callbacks  # imports wandb / mlflow only when named

    return tracker_callbacks(plan, sweep_dir, index)


class BatchedTBXLogger(TBXLoggerCallback):
    """TensorBoard gets every evaluation of a batched result (``service.report_batch``),
    each at its training step: Tune's ``training_iteration`` counts batches, not evaluations."""

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        base = newest(result)
        for record in rows(result):
            row = {**base, **record}
            row["timesteps_total"] = row.get("step") or row.get("training_iteration")
            super().log_trial_result(iteration, trial, row)


class StageFailures(tune.Callback):
    """A pre-training trial that failed for good: its marker tells the trials waiting for it
    (``service.stage_gate``) to fail with its reason instead of waiting for ever."""

    def __init__(self, plan: SweepPlan, sweep_dir: str) -> None:
        self.stage_ids = {t.trial_id for t in plan.pretrain}
        self.tuning = {
            t.trial_id: t.config[PROTOCOL_KEY]
            for t in plan.trials
            if (t.config.get(PROTOCOL_KEY) or {}).get("role") == TUNING
        }
        self.sweep_dir = sweep_dir

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        stage_id = trial.config.get("planned_id")
        if stage_id in self.tuning:  # failed for good: it ranks last, its arm's re-runs go on
            role = self.tuning[stage_id]
            try:
                record_score(self.sweep_dir, role["group"], stage_id, None, role["settings"])
            except OSError:
                pass
        if stage_id in self.stage_ids:
            from service.ray_compat import trial_error_text

            try:
                mark_failed(self.sweep_dir, stage_id, trial_error_text(trial))
            except OSError:  # storage gone: the sink reports it; waiting trials time out with it
                pass


class PruneCheckpoints(tune.Callback):
    """Delete a trial's checkpoints once it has finished; keep all of them until then.

    Tune's ``CheckpointConfig(num_to_keep=k)`` deletes the oldest checkpoint as soon as a
    new one registers, but saves the experiment state that names the new one only later
    (a forced sync at its next step at best). A driver killed in between leaves a state
    whose checkpoint is gone, and the restored trial fails with "Could not recover from
    checkpoint as it does not exist on storage anymore". So Tune keeps every checkpoint
    (``num_to_keep=None``: a running trial holds up to num_evals / checkpoint_every of
    them) and this callback removes them when the trial completes or is stopped: nothing
    restores a finished trial (the sink treats its row as final). A failed trial keeps
    its checkpoints for ``qsweep resume --retry-failed``.
    """

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        delete_trial_checkpoints(trial)


def refuse_separate_stage_run(sweep_dir: str) -> None:
    """A folder whose pre-training stage ran in a Tune run of its own (``tune-pretrain/``,
    qsweep before the stage joined the sweep's run) cannot be continued: one line saying so,
    naming the qsweep that wrote it."""
    fs, path = storage.resolve(f"{sweep_dir.rstrip('/')}/{SEPARATE_STAGE_DIR}")
    if not storage.exists(fs, path):
        return
    written_by = "an older qsweep"
    try:
        table = storage.read_trials(sweep_dir)
        found = {json.loads(v).get("qsweep") for v in table.column("versions").to_pylist() if v}
        if found - {None}:
            written_by = "qsweep " + "/".join(sorted(found - {None}))
    except (OSError, ValueError, KeyError, pa.ArrowException):
        pass
    raise SweepError(
        f"{sweep_dir} was written by {written_by}, which ran the pre-training stage in a Tune "
        f"run of its own ({SEPARATE_STAGE_DIR}/); this qsweep runs it inside the sweep's run "
        "and cannot continue that folder: start the sweep again with `qsweep run SPEC "
        "--overwrite` (or a new results location)"
    )


def tune_state_exists(sweep_dir: str) -> bool:
    fs, path = storage.resolve(f"{sweep_dir.rstrip('/')}/{TUNE_DIR}")
    return has_tune_state(fs, path)


def restore_tuner(
    plan: SweepPlan,
    sweep_dir: str,
    callbacks: list[tune.Callback],
    retry_failed: bool = False,
    skip: set[str] | frozenset[str] = frozenset(),
) -> tune.Tuner:
    """Continue an interrupted sweep: unfinished trials resume from their last checkpoint;
    trials that already failed for good stay failed unless ``retry_failed``.

    The search space goes in again (without the ``skip``ped, finished trials): Tune uses it
    only if its experiment state turns out unreadable and it restarts the experiment, which
    must then run the planned trials, not one trial with an empty config.
    """
    shorten_storage_errors()
    count_callbacks_lightly()  # Ray would import mlflow and wandb to count callbacks
    space, _, _ = encode(plan, skip)
    tuner = tune.Tuner.restore(
        f"{sweep_dir.rstrip('/')}/{TUNE_DIR}",
        make_trainable(plan, sweep_dir),
        resume_unfinished=True,
        resume_errored=retry_failed,
        param_space=space,
    )
    # The restored run config carries the callbacks pickled at the first start; give it
    # fresh ones so the sink reloads what the Parquet holds now.
    run_config = local_run_config(tuner)
    run_config.callbacks = callback_list(plan, sweep_dir, callbacks)
    # A sweep started by an older qsweep pickled num_to_keep=1: new trials keep every checkpoint.
    run_config.checkpoint_config = tune.CheckpointConfig(num_to_keep=None)
    return tuner
