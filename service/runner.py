"""Start, resume and inspect sweeps: the work behind ``qsweep run`` / ``resume`` / ``status``.

The CLI only parses arguments and prints; everything that touches Ray or the results
location is here, so tests drive it directly.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import yaml

from contract import journal, storage
from contract.schema import PLAN_FILE, SPEC_FILE, TRIALS_FILE
from contract.storage import first_line
from service.errors import SweepError
from service.sink import ParquetSink
from service.spec import STAGE_PREFIX, SweepPlan
from service.status import load_stored_plan


def sweep_location(results: str, name: str) -> str:
    """``<results>/<name>``: absolute for a local path, unchanged scheme for a URI."""
    if storage.is_uri(results):
        return f"{results.rstrip('/')}/{name}"
    return os.path.abspath(os.path.join(os.path.expanduser(results), name))


def versions() -> dict[str, str]:
    import ray
    import torch

    from service import __version__

    return {
        "qsweep": __version__,
        "torch": torch.__version__,
        "ray": ray.__version__,
        "pyarrow": pa.__version__,
        "python": platform.python_version(),
    }


def connect(
    address: str | None,
    dashboard: bool = True,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int = 8265,
    num_cpus: int | None = None,
) -> None:
    """Join a cluster (``--address`` or a Ray job's RAY_ADDRESS) or start an embedded one.

    The embedded dashboard binds to 127.0.0.1 unless the user asks otherwise: it can run
    jobs, so it must not face an untrusted network.
    """
    # Tune warns on every forced experiment snapshot (one per checkpoint with num_to_keep);
    # for many short trials that is all noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        target = address or os.environ["RAY_ADDRESS"]
        check_reachable(target)
        try:
            ray.init(address=address or None, log_to_driver=False)
        except ConnectionError as err:
            raise SweepError(
                f"joining the Ray cluster at {target} failed: {first_line(err)}"
            ) from None
        return
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        dashboard_host=dashboard_host,
        dashboard_port=dashboard_port,
        log_to_driver=False,
    )


@contextmanager
def stop_ray_meanwhile() -> Iterator[None]:
    """Stop Ray (an embedded cluster: ~1.4 s of waiting for its processes to exit) in a
    thread while the block runs (the headline and the report need no Ray); joined at its end.

    Garbage that still holds Ray objects (Tune's, in reference cycles) is collected first and
    the collector is off until Ray has stopped: an ObjectRef freed by a collection while Ray
    shuts down makes Ray's core worker end the process with exit 1 ("The core worker has
    already been shutdown"), which CI saw after a resume had finished every trial."""
    import ray

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    stopper = threading.Thread(target=ray.shutdown, name="ray-shutdown")
    stopper.start()
    try:
        yield
    finally:
        stopper.join()
        if was_enabled:
            gc.enable()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, naming the address, where ``ray.init`` would retry for minutes."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return
    except ValueError:
        raise SweepError(
            f"--address {address}: expected HOST:PORT, auto or ray://HOST:PORT"
        ) from None
    except OSError as err:
        raise SweepError(
            f"cannot reach the Ray cluster at {address}: {err.strerror or first_line(err)} "
            f"(is `ray start --head` running there, and is the GCS port open?)"
        ) from None


@dataclass
class SweepRun:
    plan: SweepPlan
    sweep_dir: str
    pretrain_failed: bool = False  # the stage failed, so the main sweep did not run

    @property
    def spec(self):
        return self.plan.spec


def prepare(plan: SweepPlan, results: str | None = None, overwrite: bool = False) -> SweepRun:
    """Check the results location and store the validated spec beside the Parquet, with the
    plan's summary (what ``qsweep status`` reads without expanding the spec again)."""
    spec = plan.spec
    sweep_dir = sweep_location(results or spec.results, spec.name)
    fs, path = storage.resolve(sweep_dir)
    existing = storage.exists(fs, f"{path}/{TRIALS_FILE}") or storage.exists(
        fs, f"{path}/{journal.EVENTS_DIR}"
    )  # readable or not: it is a sweep's
    if existing and not overwrite:
        raise SweepError(
            f"{sweep_dir} already holds a sweep: `qsweep resume {sweep_dir}` continues it, "
            f"--overwrite starts over"
        )
    if overwrite and storage.exists(fs, path):
        storage.delete_dir(fs, path)
    storage.write_text_atomic(
        fs, f"{path}/{SPEC_FILE}", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    )
    storage.write_text_atomic(fs, f"{path}/{PLAN_FILE}", json.dumps(plan.summary(), indent=1))
    return SweepRun(plan, sweep_dir)


def _callbacks(run: SweepRun, live: bool | None) -> list[Any]:
    from service.progress import SweepProgress

    planned = run.plan.planned
    try:
        sink = ParquetSink(run.sweep_dir, run.plan.name, planned, versions())
    except (pa.ArrowException, OSError, ValueError) as err:  # corrupt, truncated or foreign Parquet
        raise SweepError(
            f"{run.sweep_dir}: cannot continue from unreadable results ({first_line(err)})"
        ) from None
    return [sink, SweepProgress(planned, run.plan.total, live=live)]


def _pretrain_done(run: SweepRun) -> set[str]:
    """Pre-training trials whose checkpoint is in ``<sweep>/stages/`` already."""
    from service.tuner import stage_location

    fs, _ = storage.resolve(run.sweep_dir)
    return {
        t.trial_id
        for t in run.plan.pretrain
        if storage.exists(
            fs, storage.resolve(stage_location(run.sweep_dir, STAGE_PREFIX + t.trial_id))[1]
        )
    }


def _run_pretrain(
    run: SweepRun,
    live: bool | None,
    retry_failed: bool = False,
    start_ray: Callable[[], None] = lambda: None,
) -> bool:
    """The float pre-training stage, unless its checkpoints exist; resumed if interrupted.
    False when a stage trial failed (its row says why): fine-tuning trials need its checkpoint,
    so the main sweep does not run, and its trials count as not run (``qsweep run`` exits 1).
    """
    from service.tuner import PRETRAIN_TUNE_DIR, build_tuner, restore_tuner, tune_state_exists

    stage = run.plan.pretrain
    done = _pretrain_done(run)
    if len(done) == len(stage):
        return True
    start_ray()
    callbacks = _callbacks(run, live)
    if tune_state_exists(run.sweep_dir, PRETRAIN_TUNE_DIR):
        tuner = restore_tuner(
            run.plan, run.sweep_dir, callbacks, retry_failed, pretrain=True, skip=done
        )
    else:
        tuner = build_tuner(run.plan, run.sweep_dir, callbacks, pretrain=True, skip=done)
    tuner.fit()
    return len(_pretrain_done(run)) == len(stage)


def _one_run(run: SweepRun) -> bool:
    """Whether the stage and the sweep share one Tune run (``service.stage_gate``): a grid
    sweep with a stage, unless an older qsweep already gave its stage a Tune run of its own."""
    from service.tuner import PRETRAIN_TUNE_DIR, tune_state_exists

    return (
        bool(run.plan.pretrain)
        and run.spec.search.mode == "grid"
        and not tune_state_exists(run.sweep_dir, PRETRAIN_TUNE_DIR)
    )


def run_sweep(run: SweepRun, live: bool | None = None) -> SweepRun:
    """Run the sweep to its end; failed trials are rows of the Parquet, not exceptions
    (``service.status.sweep_outcome`` counts them)."""
    from service.tuner import build_tuner

    if _one_run(run):
        build_tuner(run.plan, run.sweep_dir, _callbacks(run, live), with_stage=True).fit()
        return run
    if not _run_pretrain(run, live):
        run.pretrain_failed = True
        return run
    build_tuner(run.plan, run.sweep_dir, _callbacks(run, live)).fit()
    return run


def _statuses(sweep_dir: str) -> dict[str, str]:
    """Trial id -> status, as the sweep's results record them."""
    table = storage.read_trials(sweep_dir)  # with the event journal's changes
    return {r["trial_id"]: r["status"] for r in table.select(["trial_id", "status"]).to_pylist()}


def _finished_trials(sweep_dir: str, retry_failed: bool) -> set[str]:
    """Trial ids trials.parquet records as final (failed ones too unless ``retry_failed``)."""
    final = {"completed", "stopped"} | (set() if retry_failed else {"failed"})
    return {tid for tid, status in _statuses(sweep_dir).items() if status in final}


def _settle_stage(run: SweepRun, skip: set[str]) -> None:
    """Before a one-run sweep continues: a stage trial that runs again lets its trials wait
    again; one recorded as failed for good tells them so (the driver that saw it fail may
    have died before it could); one recorded as finished whose model file is gone runs again
    (its trials would wait for ever)."""
    from service.stage_gate import clear_failed, mark_failed, stage_done

    statuses = _statuses(run.sweep_dir)
    for stage in run.plan.pretrain:
        sid = stage.trial_id
        if stage_done(run.sweep_dir, sid):
            continue
        if sid not in skip:
            clear_failed(run.sweep_dir, sid)
        elif statuses.get(sid) == "failed":
            mark_failed(run.sweep_dir, sid, "it failed in an earlier run (see trials.parquet)")
        else:
            skip.discard(sid)
            clear_failed(run.sweep_dir, sid)


def resume_sweep(
    sweep_dir: str,
    retry_failed: bool = False,
    live: bool | None = None,
    start_ray: Callable[[], None] = lambda: None,
) -> SweepRun:
    """Finish the pre-training stage if needed, then continue (or start) the main sweep.

    Without Tune's state (no ``tune/tuner.pkl``, or no experiment snapshot beside it: the
    driver died while starting, or the disk filled before Tune saved one) the main sweep
    starts afresh from the stored spec; the Parquet is kept, and trials it records as
    finished are not run again. ``start_ray`` (``connect``) is called only when there is
    something to run: resuming a finished sweep starts no Ray.
    """
    from service.tuner import build_tuner, restore_tuner, tune_state_exists

    sweep_dir = storage.absolute(sweep_dir)  # Tune reads a relative path as a URI
    run = SweepRun(load_stored_plan(sweep_dir), sweep_dir)
    if _one_run(run):
        return _resume_one_run(run, retry_failed, live, start_ray)
    if not _run_pretrain(run, live, retry_failed, start_ray):
        run.pretrain_failed = True
        return run
    callbacks = _callbacks(run, live)  # the sink loads (and tidies) what the Parquet holds first
    skip = _finished_trials(sweep_dir, retry_failed) if run.spec.search.mode == "grid" else set()
    if {t.trial_id for t in run.plan.trials} <= skip:
        return run  # every planned trial is final in the Parquet: nothing to run
    start_ray()
    if tune_state_exists(sweep_dir):
        restore_tuner(run.plan, sweep_dir, callbacks, retry_failed=retry_failed, skip=skip).fit()
    else:
        build_tuner(run.plan, sweep_dir, callbacks, skip=skip).fit()
    return run


def _resume_one_run(
    run: SweepRun, retry_failed: bool, live: bool | None, start_ray: Callable[[], None]
) -> SweepRun:
    """``resume_sweep`` for a grid sweep whose stage shares its Tune run."""
    from service.tuner import build_tuner, restore_tuner, tune_state_exists

    callbacks = _callbacks(run, live)
    skip = _finished_trials(run.sweep_dir, retry_failed)
    _settle_stage(run, skip)
    if {t.trial_id for t in (*run.plan.pretrain, *run.plan.trials)} <= skip:
        return run
    start_ray()
    if tune_state_exists(run.sweep_dir):
        tuner = restore_tuner(
            run.plan, run.sweep_dir, callbacks, retry_failed, skip=skip, with_stage=True
        )
    else:
        tuner = build_tuner(run.plan, run.sweep_dir, callbacks, skip=skip, with_stage=True)
    tuner.fit()
    return run


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
