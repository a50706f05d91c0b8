"""Experiment trackers (the spec's ``tracking:``): Tune logger callbacks on the trackers' own APIs.

Two ``ray.tune.logger.LoggerCallback`` subclasses (Tune's public hooks ``setup``,
``log_trial_start``, ``log_trial_result``, ``log_trial_end``, ``on_experiment_end``; no
private Ray name), each speaking only its tracker's public API: ``mlflow.MlflowClient`` and
``wandb.init`` / ``Run.log`` / ``Run.finish``. One tracked run per trial, named by our trial
id (not Tune's), its params our full trial config (``service.tune_config.decode`` against the
plan, not Tune's ``{planned_id: ...}``), its metrics every evaluation the Parquet curve
holds (``step`` and ``contract.record.CURVE_METRICS``, plus ``progress`` and ``current_lr``;
a batched Tune result is unpacked with ``service.report_batch.rows``).

Each callback talks to its tracker from one daemon thread of the driver, in the order Tune's
events came: the hooks only queue work, so a slow server (or W&B's ``wandb.init``, a second
or so) never holds up Tune's loop. W&B runs in the driver (one ``wandb.init`` per trial,
several open at once), its uploads in W&B's own service process. At the end of a stage
(``on_experiment_end``) the thread finishes every open run and the stage waits for it: for
local stores until everything is written, online for at most ``TRACKER_DRAIN_TIMEOUT_S``.

The Parquet stays the record. A tracker that fails (server unreachable, no API key, a
package error) prints one ``warning:`` line on stderr and is off for the rest of the stage;
the trials and their Parquet rows never notice (the sink comes first among the callbacks).

Secrets come only from the environment (``WANDB_API_KEY``, ``MLFLOW_TRACKING_TOKEN`` /
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``), read by the tracker libraries
in the driver: the spec refuses them, these callbacks pickle (into ``tuner.pkl``) only their
spec settings (``__reduce__``), and no Ray actor or runtime env ever sees a key (on a
cluster, set it where the driver runs).
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.logger import LoggerCallback

from contract.record import CURVE_METRICS
from service.plan import SweepPlan
from service.report_batch import rows
from service.trial_index import TrialIndex

TRACKED_METRICS = ("step", *CURVE_METRICS, "progress", "current_lr")
TRIAL_TAG = "qsweep.trial_id"  # MLflow tags of a run: our trial id, the sweep, Tune's trial id
SWEEP_TAG = "qsweep.sweep"
TUNE_TRIAL_TAG = "qsweep.tune_trial_id"
WANDB_UPLOAD_TIMEOUT_S = 120  # online: how long a run's finish waits for its uploads
# Online (a server in between): the end of a stage waits at most this long for a tracker to
# write what is queued; a local store (file:, sqlite:, W&B offline) is always waited for.
TRACKER_DRAIN_TIMEOUT_S = 180
MLFLOW_PARAM_CHARS = 6000  # MLflow's longest param value
MLFLOW_BATCH_PARAMS = 100  # MLflow's most params in one log_batch
MLFLOW_BATCH_METRICS = 1000  # and metrics
# An unreachable MLflow server must not hold the sweep for minutes of retries per call:
# unless the environment says otherwise, two retries and a 10 s timeout per request.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def tracker_callbacks(
    plan: SweepPlan, sweep_dir: str, index: TrialIndex | None = None
) -> list[tune.Callback]:
    """The callbacks of the trackers the spec names (none without ``tracking:``); ``index``:
    the sweep's shared trial index (``service.trial_index``)."""
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
            ).sharing(index),
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
            ).sharing(index),
        )
    return callbacks


def _append(callbacks: list[tune.Callback], name: str, make: Callable[[], Any]) -> None:
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


class _Worker:
    """One daemon thread running queued calls in order (``None`` ends it)."""

    def __init__(self, name: str) -> None:
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        self.calls.put((call, args))

    def _loop(self) -> None:
        while (item := self.calls.get()) is not None:
            call, args = item
            call(*args)

    def close(self, timeout: float | None) -> bool:
        """Run what is queued and end; False when ``timeout`` ran out first."""
        self.calls.put(None)
        self.thread.join(timeout)
        return not self.thread.is_alive()


class _Tracker(LoggerCallback):
    """What both trackers share: our id and config of a Tune trial, the worker thread that
    talks to the tracker, and the one warning. The hooks run on Tune's loop and only queue;
    the ``_open`` / ``_start`` / ``_log`` / ``_end`` / ``_close`` of a subclass run on the
    worker, each once at a time, in order."""

    tracker = "tracker"
    close_when_off = False  # whether the runs still open end at the stage's end when it is off

    def __init__(self, planned: dict[str, dict[str, Any]], sweep: str) -> None:
        self.planned = planned
        self.index = TrialIndex(planned)
        self.sweep = sweep
        self.broken = False
        self._ids: dict[str, tuple[str, dict[str, Any]]] = {}  # Tune's trial id -> ours
        self._started: set[str] = set()  # Tune trial ids with a run started (driver side)
        self._worker: _Worker | None = None
        self._lock = threading.Lock()  # one warning, from whichever thread fails first

    # Tune pickles callbacks (into tuner.pkl): only the spec's settings go, no client, thread
    # or key; unpickling builds a fresh callback.
    def settings(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.settings())

    def remote(self) -> bool:
        """Whether a server is in between (the end of a stage then waits a bounded time)."""
        return True

    # -- Tune's hooks (the driver's loop): queue the work --------------------------------
    def setup(self, *args: Any, **info: Any) -> None:
        self.broken = False
        self._submit(self._guarded, "cannot reach the tracking store", self._open)

    def sharing(self, index: TrialIndex | None) -> _Tracker:
        """Use the sweep's shared trial index (``service.trial_index``) when there is one."""
        if index is not None:
            self.index = index
        return self

    def identify(self, trial) -> tuple[str, dict[str, Any]]:
        """(our trial id, our trial config with ``trial_id`` and ``sweep`` added)."""
        if trial.trial_id not in self._ids:
            tid, config = self.index.identify(trial)
            self._ids[trial.trial_id] = (tid, {"trial_id": tid, "sweep": self.sweep, **config})
        return self._ids[trial.trial_id]

    def log_trial_start(self, trial) -> None:
        if self.broken or trial.trial_id in self._started:
            return
        self._started.add(trial.trial_id)
        tid, config = self.identify(trial)
        self._submit(self._guarded, "cannot start a run", self._start, trial.trial_id, tid, config)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        """Each evaluation of a batched result (``service.report_batch``) is its own row."""
        if self.broken:
            return
        records = [m for m in (tracked_metrics(r) for r in rows(result)) if m]
        if not records:
            return
        self.log_trial_start(trial)
        self._submit(self._guarded, "cannot log metrics", self._log, trial.trial_id, records)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial.trial_id in self._started:
            self._started.discard(trial.trial_id)
            self._submit(self._guarded, "cannot end a run", self._end, trial.trial_id, failed)

    def log_trial_save(self, trial) -> None:
        pass  # checkpoints stay with Tune (no uploads)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Finish every open run and wait until the tracker has them."""
        worker, self._worker = self._worker, None
        self._started.clear()
        if worker is None:
            return
        worker.submit(self._finish_open)
        timeout = TRACKER_DRAIN_TIMEOUT_S if self.remote() else None
        if not worker.close(timeout):
            self._fail(f"still writing after {timeout} s; the rest is left unsent")

    # -- the worker's side ---------------------------------------------------------------
    def _submit(self, call: Callable[..., Any], *args: Any) -> None:
        if self._worker is None:
            self._worker = _Worker(f"qsweep-{self.tracker}")
        self._worker.submit(call, *args)

    def _guarded(self, what: str, call: Callable[..., Any], *args: Any) -> None:
        """Run one tracker call; the first failure turns the tracker off with one warning."""
        if self.broken:
            return
        try:
            call(*args)
        except Exception as err:  # any tracker error: the sweep goes on without it
            self._fail(f"{what}: {type(err).__name__}: {err}")

    def _finish_open(self) -> None:
        """``_close``, also when the tracker is off (W&B's runs then still end)."""
        if self.broken and not self.close_when_off:
            return
        try:
            self._close()
        except Exception as err:  # said once: a tracker already off says nothing more
            self._fail(f"cannot finish its runs: {type(err).__name__}: {err}")

    def _fail(self, why: str) -> None:
        with self._lock:
            if self.broken:
                return
            self.broken = True
        _warn(self.tracker, why)

    def _open(self) -> None:
        """Connect (on the worker, at the start of a stage)."""

    def _start(self, tune_id: str, tid: str, config: dict[str, Any]) -> None:
        raise NotImplementedError

    def _log(self, tune_id: str, records: list[dict[str, float]]) -> None:
        raise NotImplementedError

    def _end(self, tune_id: str, failed: bool) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Finish the runs still open (an interrupted stage)."""


class QsweepMLflowCallback(_Tracker):
    """One MLflow run per trial through ``mlflow.MlflowClient``: run name and
    ``qsweep.trial_id`` tag our trial id, params our trial config, metrics at our training
    ``step``, status FINISHED or FAILED at the trial's end (KILLED: still running when the
    stage ended). A trial restored by ``qsweep resume`` (same Tune trial id) continues its
    run, after the last step it logged; a retried attempt's evaluations at or before the last
    step logged are not logged again."""

    tracker = "mlflow"

    def __init__(
        self,
        planned: dict[str, dict[str, Any]],
        sweep: str,
        tracking_uri: str | None,
        experiment: str,
    ) -> None:
        super().__init__(planned, sweep)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self._client = None
        self._experiment_id: str | None = None
        self._runs: dict[str, str] = {}  # Tune trial id -> MLflow run id (worker side)
        self._last_step: dict[str, float] = {}  # MLflow run id -> last step logged

    def settings(self) -> tuple[Any, ...]:
        return (self.planned, self.sweep, self.tracking_uri, self.experiment_name)

    def _uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")

    def remote(self) -> bool:
        uri = self._uri()  # none: MLflow's default, a local store
        return bool(uri) and not uri.startswith(("file:", "sqlite:")) and ":" in uri

    def setup(self, *args: Any, **info: Any) -> None:
        for var, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(var, value)
        uri = self._uri()
        if uri.startswith("file:") or (uri and ":" not in uri):  # a file store, which
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x refuses
        super().setup(*args, **info)

    def _open(self) -> None:
        from mlflow import MlflowClient

        self._client = client = MlflowClient(self.tracking_uri)
        self._runs, self._last_step = {}, {}
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                self._experiment_id = client.create_experiment(self.experiment_name)
                return
            except Exception:  # another driver created it meanwhile
                experiment = client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
        self._experiment_id = experiment.experiment_id

    def _start(self, tune_id: str, tid: str, config: dict[str, Any]) -> None:
        from mlflow.entities import Param, RunStatus

        client = self._client
        found = client.search_runs(
            [self._experiment_id],
            filter_string=f"tags.`{TUNE_TRIAL_TAG}` = '{tune_id}' "
            f"and tags.`{TRIAL_TAG}` = '{tid}' and tags.`{SWEEP_TAG}` = '{self.sweep}'",
            max_results=1,
        )
        if found:  # a restored trial: continue its run
            run = found[0]
            client.update_run(run.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self._last_step[run.info.run_id] = run.data.metrics.get("step", -math.inf)
            self._runs[tune_id] = run.info.run_id
            return
        tags = {TRIAL_TAG: tid, SWEEP_TAG: self.sweep, TUNE_TRIAL_TAG: tune_id}
        run = client.create_run(self._experiment_id, tags=tags, run_name=tid)
        self._runs[tune_id] = run_id = run.info.run_id
        params = [Param(k, v) for k, v in _flat_params(config).items()]
        for start in range(0, len(params), MLFLOW_BATCH_PARAMS):
            client.log_batch(run_id, params=params[start : start + MLFLOW_BATCH_PARAMS])

    def _log(self, tune_id: str, records: list[dict[str, float]]) -> None:
        from mlflow.entities import Metric

        run_id = self._runs.get(tune_id)
        if run_id is None:
            return
        now, last, batch = int(time.time() * 1000), self._last_step.get(run_id, -1), []
        for metrics in records:
            if metrics["step"] <= last:
                continue
            last = step = int(metrics["step"])
            batch.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        for start in range(0, len(batch), MLFLOW_BATCH_METRICS):
            self._client.log_batch(run_id, metrics=batch[start : start + MLFLOW_BATCH_METRICS])
        self._last_step[run_id] = last

    def _end(self, tune_id: str, failed: bool) -> None:
        run_id = self._runs.pop(tune_id, None)
        if run_id is not None:
            self._client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def _close(self) -> None:
        runs, self._runs = self._runs, {}
        for run_id in runs.values():
            self._client.set_terminated(run_id, "KILLED")


class QsweepWandbCallback(_Tracker):
    """One W&B run per trial through ``wandb.init`` (several open at once in the driver):
    run name our trial id, group the sweep, config our trial config, history every
    evaluation, once: ``run.log`` without a step, so W&B's own step counts the rows and our
    training step is the ``step`` metric (Tune's ``training_iteration``, which a batched
    result's evaluations share, would keep one row per batch: W&B keeps one row per step).
    A retried attempt's evaluations at or before the last step logged are not logged again.
    Online, a run's finish waits at most ``WANDB_UPLOAD_TIMEOUT_S`` for its uploads."""

    tracker = "wandb"
    close_when_off = True  # local: a run's writer in W&B's service ends

    def __init__(
        self,
        planned: dict[str, dict[str, Any]],
        sweep: str,
        project: str,
        mode: str = "online",
        entity: str | None = None,
        wandb_dir: str | None = None,
    ) -> None:
        super().__init__(planned, sweep)
        self.project, self.mode, self.entity, self.wandb_dir = project, mode, entity, wandb_dir
        self._runs: dict[str, Any] = {}  # Tune trial id -> wandb Run (worker side)
        self._last_step: dict[str, float] = {}  # Tune trial id -> last training step logged

    def settings(self) -> tuple[Any, ...]:
        return (self.planned, self.sweep, self.project, self.mode, self.entity, self.wandb_dir)

    def remote(self) -> bool:
        return self.mode != "offline"

    def _open(self) -> None:
        import wandb

        self._runs = {}
        # Online needs a key; never prompt for one (the driver may sit on a terminal).
        if (
            self.mode != "offline"
            and not os.environ.get("WANDB_API_KEY")
            and not wandb.login(prompt=False, verify=False)
        ):
            raise RuntimeError("no API key: set WANDB_API_KEY in the driver's environment")

    def _start(self, tune_id: str, tid: str, config: dict[str, Any]) -> None:
        import wandb

        extra: dict[str, Any] = {}
        if self.entity is not None:
            extra["entity"] = self.entity
        if self.wandb_dir is not None and not os.environ.get("WANDB_DIR"):
            extra["dir"] = self.wandb_dir
        if self.mode != "offline":
            extra["resume"] = "allow"  # a restored trial continues its run
        self._runs[tune_id] = wandb.init(
            project=self.project,
            group=self.sweep,
            name=tid,
            id=tune_id,  # unique per Tune experiment and kept across a restore
            config=config,
            mode=self.mode,
            reinit="create_new",  # several trials' runs open at once
            allow_val_change=True,
            settings=wandb.Settings(
                console="off",  # the driver's own output is not a trial's
                quiet=True,
                finish_timeout=WANDB_UPLOAD_TIMEOUT_S,
                finish_timeout_raises=True,
            ),
            **extra,
        )

    def _log(self, tune_id: str, records: list[dict[str, float]]) -> None:
        run = self._runs.get(tune_id)
        if run is None:
            return
        last = self._last_step.get(tune_id, -math.inf)
        for metrics in records:
            if metrics["step"] > last:
                run.log(metrics)  # no step=: W&B counts the rows (see the class)
                last = metrics["step"]
        self._last_step[tune_id] = last

    def _end(self, tune_id: str, failed: bool) -> None:
        run = self._runs.pop(tune_id, None)
        if run is not None:
            run.finish(exit_code=1 if failed else 0)

    def _close(self) -> None:
        """End the runs still open, then shut W&B's service down: ``run.finish()`` returns
        once the service has a run's last record, not once its files are complete; the
        service ends only after every run's files are written (and, online, uploaded or
        given up after ``WANDB_UPLOAD_TIMEOUT_S``). The next stage starts a new one."""
        import wandb

        runs, self._runs = self._runs, {}
        errors: list[BaseException] = []
        for run in runs.values():
            try:
                run.finish(exit_code=1)
            except Exception as err:  # the others still end
                errors.append(err)
        try:
            wandb.teardown()
        except SystemExit as err:  # W&B's service ended badly: W&B exits the caller
            errors.append(RuntimeError(f"W&B's service process exited with {err.code}"))
        if errors:
            raise errors[0]
