"""Experiment trackers (the spec's ``tracking:``) through Ray Tune's own logger callbacks.

``MLflowLoggerCallback`` and ``WandbLoggerCallback`` (``ray.air.integrations``), each
subclassed only to speak in qsweep's terms: one tracked run per trial, named by our trial id
(not Tune's), its params our full trial config (``service.tune_config.decode`` against the
plan, not Tune's ``{planned_id: ...}``), its metrics every evaluation the Parquet curve holds
(``step`` and ``contract.record.CURVE_METRICS``, plus ``progress`` and ``current_lr``).

The Parquet stays the record. A tracker that fails (server unreachable, no API key, a
package error) prints one ``warning:`` line on stderr and is off for the rest of the stage;
the trials and their Parquet rows never notice (the sink comes first among the callbacks).

Secrets come only from the environment (``WANDB_API_KEY``, ``MLFLOW_TRACKING_TOKEN`` /
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``): the spec refuses them, these
callbacks pickle (into ``tuner.pkl``) only their spec settings, and the W&B logging actor is
created without Ray's usual ``runtime_env={"env_vars": {"WANDB_API_KEY": ...}}``, which
Ray's runtime-env agent would write to its log in plain text. The actor runs on the driver's
node and inherits that node's environment: on a cluster, set the key where ``ray start``
runs on the head (as for cloud keys, ``service.credentials``).
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import ray
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem

from contract.record import CURVE_METRICS
from service.report_batch import rows
from service.spec import SweepPlan
from service.tune_config import decode

TRACKED_METRICS = ("step", *CURVE_METRICS, "progress", "current_lr")
TRIAL_TAG = "qsweep.trial_id"  # MLflow tags of a run: our trial id, the sweep, Tune's trial id
SWEEP_TAG = "qsweep.sweep"
TUNE_TRIAL_TAG = "qsweep.tune_trial_id"
WANDB_UPLOAD_TIMEOUT_S = 120  # at the end of a stage, for W&B runs to finish uploading
MLFLOW_PARAM_CHARS = 6000  # MLflow's longest param value
# An unreachable MLflow server must not hold the sweep for minutes of retries per call:
# unless the environment says otherwise, two retries and a 10 s timeout per request.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def tracker_callbacks(plan: SweepPlan, sweep_dir: str) -> list[tune.Callback]:
    """The callbacks of the trackers the spec names (none without ``tracking:``)."""
    tracking = plan.spec.tracking
    callbacks: list[tune.Callback] = []
    if tracking is None:
        return callbacks
    if tracking.mlflow is not None:
        _append(
            callbacks,
            "mlflow",
            lambda: QsweepMLflowCallback(
                plan.planned,
                plan.name,
                tracking.mlflow.tracking_uri,
                tracking.mlflow.experiment or plan.name,
            ),
        )
    if tracking.wandb is not None:
        local = "://" not in sweep_dir
        _append(
            callbacks,
            "wandb",
            lambda: QsweepWandbCallback(
                plan.planned,
                plan.name,
                tracking.wandb.project,
                tracking.wandb.mode,
                tracking.wandb.entity,
                # offline runs (and W&B's files) next to the Parquet, unless WANDB_DIR says
                wandb_dir=os.path.abspath(sweep_dir) if local else None,
            ),
        )
    return callbacks


def _append(callbacks: list[tune.Callback], name: str, make) -> None:
    """A tracker whose package is broken here (the spec checked it is installed) is left out
    with one warning; the sweep runs."""
    try:
        callbacks.append(make())
    except (ImportError, RuntimeError) as err:
        _warn(name, f"{type(err).__name__}: {err}")


def _warn(tracker: str, why: str) -> None:
    line = " ".join(why.split())[:300]
    print(
        f"warning: {tracker} tracking is off for this stage ({line}); "
        "the Parquet results are unaffected",
        file=sys.stderr,
        flush=True,
    )


def tracked_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The evaluation's numbers a curve row keeps (a failure's last result has none)."""
    metrics = {}
    for name in TRACKED_METRICS:
        value = result.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[name] = value
    return metrics if "step" in metrics else {}


def _flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested trial config as MLflow params: ``estimator_options/eps`` -> ``"0.001"``."""
    params = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            params.update(_flat_params(value, f"{prefix}{key}/"))
        else:
            params[f"{prefix}{key}"] = str(value)[:MLFLOW_PARAM_CHARS]
    return params


class _Tracker:
    """What both trackers share: our id and config of a Tune trial, and the one warning."""

    tracker = "tracker"

    def _qsweep_init(self, planned: dict[str, dict[str, Any]], sweep: str) -> None:
        self.planned = planned
        self.sweep = sweep
        self.broken = False
        self._ids: dict[str, tuple[str, dict[str, Any]]] = {}

    def identify(self, trial) -> tuple[str, dict[str, Any]]:
        """(our trial id, our trial config with ``trial_id`` and ``sweep`` added)."""
        if trial.trial_id not in self._ids:
            try:
                tid, config = decode(self.planned, trial.config, trial.trial_id)
            except (KeyError, TypeError, ValueError):  # not a planned trial: Tune's terms
                tid, config = trial.trial_id, dict(trial.config)
            self._ids[trial.trial_id] = (tid, {"trial_id": tid, "sweep": self.sweep, **config})
        return self._ids[trial.trial_id]

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        """Each evaluation of a batched result (``service.report_batch``) is its own row."""
        for record in rows(result):
            self.log_record(iteration, trial, record)

    def guarded(self, what: str, call, *args: Any, **kwargs: Any) -> Any:
        """Run one tracker call; the first failure turns the tracker off with one warning."""
        if self.broken:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as err:  # any tracker error: the sweep goes on without it
            self.broken = True
            self.warn(f"{what}: {type(err).__name__}: {err}")
            return None

    def warn(self, why: str) -> None:
        _warn(self.tracker, why)


class QsweepMLflowCallback(_Tracker, MLflowLoggerCallback):
    """``MLflowLoggerCallback`` with one MLflow run per trial: run name and ``qsweep.trial_id``
    tag our trial id, params our trial config, metrics at our training ``step``. A trial
    restored by ``qsweep resume`` (same Tune trial id) continues its run, after the last step
    it logged."""

    tracker = "mlflow"

    def __init__(
        self,
        planned: dict[str, dict[str, Any]],
        sweep: str,
        tracking_uri: str | None,
        experiment: str,
    ) -> None:
        MLflowLoggerCallback.__init__(self, tracking_uri, experiment_name=experiment)
        self._qsweep_init(planned, sweep)
        self._last_step: dict[str, float] = {}  # run id -> last step logged

    def __getstate__(self) -> dict[str, Any]:
        """Only the arguments (Tune pickles callbacks into ``tuner.pkl``): no client state."""
        return {
            "planned": self.planned,
            "sweep": self.sweep,
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment_name,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def setup(self, *args: Any, **kwargs: Any) -> None:
        for var, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(var, value)
        if (self.tracking_uri or "").startswith("file:"):  # the spec asks for a file store:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x refuses it
        self._trial_runs = {}
        self.guarded("cannot reach the tracking store", super().setup, *args, **kwargs)

    def _client(self):
        return self.mlflow_util._get_client()

    def _start(self, trial) -> str:
        from mlflow.entities import Param, RunStatus

        tid, config = self.identify(trial)
        client = self._client()
        experiment_id = self.mlflow_util.experiment_id
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TUNE_TRIAL_TAG}` = '{trial.trial_id}' "
            f"and tags.`{TRIAL_TAG}` = '{tid}' and tags.`{SWEEP_TAG}` = '{self.sweep}'",
            max_results=1,
        )
        if found:  # a restored trial: continue its run
            run = found[0]
            client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self._last_step[run.info.run_id] = run.data.metrics.get("step", -math.inf)
            return run.info.run_id
        tags = {TRIAL_TAG: tid, SWEEP_TAG: self.sweep, TUNE_TRIAL_TAG: trial.trial_id}
        run = client.create_run(experiment_id, tags=tags, run_name=tid)
        params = [Param(k, v) for k, v in _flat_params(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            client.log_batch(run.info.run_id, params=params[start : start + 100])
        return run.info.run_id

    def log_trial_start(self, trial) -> None:
        if trial not in self._trial_runs:
            run_id = self.guarded("cannot start a run", self._start, trial)
            if run_id is not None:
                self._trial_runs[trial] = run_id

    def log_record(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        run_id, metrics = self._trial_runs.get(trial), tracked_metrics(result)
        if run_id is None or not metrics or metrics["step"] <= self._last_step.get(run_id, -1):
            return
        self.guarded("cannot log metrics", self._log, run_id, metrics)

    def _log(self, run_id: str, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        step, now = int(metrics["step"]), int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._client().log_batch(run_id, metrics=batch)
        self._last_step[run_id] = step

    def log_trial_end(self, trial, failed: bool = False) -> None:
        run_id = self._trial_runs.pop(trial, None)
        if run_id is not None:
            status = "FAILED" if failed else "FINISHED"
            self.guarded("cannot end a run", self._client().set_terminated, run_id, status)

    def log_trial_save(self, trial) -> None:
        pass  # checkpoints stay with Tune


class QsweepWandbCallback(_Tracker, WandbLoggerCallback):
    """``WandbLoggerCallback`` with one W&B run per trial: run name our trial id, group the
    sweep, config our trial config, history every evaluation, once: our training step is the
    ``step`` metric, and W&B's own step counts the rows. (Ray's logging actor would log each
    row at Tune's ``training_iteration``, which the evaluations of one batched result share,
    and W&B keeps one history row per step: only a batch's last evaluation would stay.) A
    retried attempt's evaluations at or before the last step logged are not logged again."""

    tracker = "wandb"

    def __init__(
        self,
        planned: dict[str, dict[str, Any]],
        sweep: str,
        project: str,
        mode: str = "online",
        entity: str | None = None,
        wandb_dir: str | None = None,
    ) -> None:
        extra: dict[str, Any] = {"mode": mode, "resume": "allow"}
        if entity is not None:
            extra["entity"] = entity
        if wandb_dir is not None and not os.environ.get("WANDB_DIR"):
            extra["dir"] = wandb_dir
        WandbLoggerCallback.__init__(
            self, project=project, group=sweep, upload_timeout=WANDB_UPLOAD_TIMEOUT_S, **extra
        )
        self._qsweep_init(planned, sweep)
        self._last_step: dict[Any, float] = {}  # trial -> last training step logged
        self._args = {
            "planned": planned,
            "sweep": sweep,
            "project": project,
            "mode": mode,
            "entity": entity,
            "wandb_dir": wandb_dir,
        }

    def __getstate__(self) -> dict[str, Any]:
        """Only the arguments (Tune pickles callbacks into ``tuner.pkl``): no actors, no key."""
        return dict(self._args)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def setup(self, *args: Any, **kwargs: Any) -> None:
        if self.kwargs["mode"] == "offline":  # no key needed, and none looked for
            return
        self.guarded("no API key", super().setup, *args, **kwargs)

    def log_trial_start(self, trial) -> None:
        if self.broken or trial in self._trial_logging_futures:
            return
        tid, config = self.identify(trial)
        init = dict(
            id=trial.trial_id,  # unique per Tune experiment and kept across a restore
            name=tid,
            reinit=True,
            allow_val_change=True,
            group=self.group,
            project=self.project,
            config=config,
            **self.kwargs,
        )
        exclude = [*self._exclude_results, *self.excludes, "config"]
        self.guarded("cannot start a run", self._start_logging_actor, trial, exclude, **init)

    def _start_logging_actor(self, trial, exclude_results: list[str], **init: Any) -> None:
        if not self._remote_logger_class:  # Ray's would put WANDB_API_KEY in a runtime env
            from ray.air.integrations.wandb import _force_on_current_node

            self._remote_logger_class = ray.remote(
                num_cpus=0, **_force_on_current_node(), max_restarts=-1, max_task_retries=-1
            )(self._logger_actor_cls)
        super()._start_logging_actor(trial, exclude_results, **init)

    def log_record(self, iteration: int, trial, result: dict) -> None:
        if self.broken:
            return
        if trial not in self._trial_logging_actors:
            self.log_trial_start(trial)
        metrics = tracked_metrics(result)
        if trial not in self._trial_queues or not metrics:
            return
        if metrics["step"] <= self._last_step.get(trial, -math.inf):
            return
        # No training_iteration in the item: the logging actor then lets W&B count the step.
        queue = self._trial_queues[trial]
        self.guarded("cannot log metrics", queue.put, (_QueueItem.RESULT, metrics))
        self._last_step[trial] = metrics["step"]

    def log_trial_save(self, trial) -> None:
        pass  # checkpoints stay with Tune (no uploads)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial in self._trial_queues:
            self.guarded("cannot end a run", super().log_trial_end, trial, failed)

    def _cleanup_logging_actor(self, trial) -> None:
        """A logging actor whose run failed (``wandb.init`` or an upload) says so once."""
        future = self._trial_logging_futures.get(trial)
        try:
            ray.get(future, timeout=0)
        except Exception as err:  # the actor's error, or still uploading when time ran out
            cause = getattr(err, "cause", None) or err  # a RayTaskError: the actor's own
            if not self.broken:
                self.broken = True
                self.warn(f"run {self.identify(trial)[0]}: {type(cause).__name__}: {cause}")
        super()._cleanup_logging_actor(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._trial_logging_futures:
            self.guarded("cannot finish its runs", super().on_experiment_end, trials, **info)
