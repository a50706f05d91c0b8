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
from service.plan import SweepPlan
from service.sink import ParquetSink
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
    from service.ray_compat import quiet_snapshot_sync_warning

    quiet_snapshot_sync_warning()  # a warning per forced snapshot: noise for short trials
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
    """The Parquet sink, then the progress view, sharing one trial index (the trackers get it
    too, ``service.tuner.callback_list``)."""
    from service.progress import SweepProgress
    from service.trial_index import TrialIndex

    planned = run.plan.planned
    index = TrialIndex(planned, run.plan.columns)
    try:
        sink = ParquetSink(run.sweep_dir, run.plan.name, planned, versions(), index=index)
    except (pa.ArrowException, OSError, ValueError) as err:  # corrupt, truncated or foreign Parquet
        raise SweepError(
            f"{run.sweep_dir}: cannot continue from unreadable results ({first_line(err)})"
        ) from None
    return [sink, SweepProgress(planned, run.plan.total, live=live, index=index)]


def run_sweep(run: SweepRun, live: bool | None = None) -> SweepRun:
    """Run the sweep to its end in one Tune run, its pre-training stage and tuning protocol
    included (``service.stage_gate``, ``service.protocol``); failed trials are rows of the
    Parquet, not exceptions (``service.status.sweep_outcome`` counts them)."""
    from service.tuner import build_tuner

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
    """Continue (or start) the sweep's one Tune run.

    Without Tune's state (no ``tune/tuner.pkl``, or no experiment snapshot beside it: the
    driver died while starting, or the disk filled before Tune saved one) the sweep starts
    afresh from the stored spec; the Parquet is kept, and trials it records as finished are
    not run again. ``start_ray`` (``connect``) is called only when there is something to run:
    resuming a finished sweep starts no Ray. A folder whose pre-training ran in a Tune run of
    its own (an older qsweep) is refused in one line.
    """
    from service.tuner import refuse_separate_stage_run, tuner_for

    sweep_dir = storage.absolute(sweep_dir)  # Tune reads a relative path as a URI
    refuse_separate_stage_run(sweep_dir)
    run = SweepRun(load_stored_plan(sweep_dir), sweep_dir)
    callbacks = _callbacks(run, live)  # the sink loads (and tidies) what the Parquet holds first
    grid = run.spec.search.mode == "grid"
    skip = _finished_trials(sweep_dir, retry_failed) if grid else set()
    _settle_stage(run, skip)
    if grid and {t.trial_id for t in (*run.plan.pretrain, *run.plan.trials)} <= skip:
        return run  # every planned trial is final in the Parquet: nothing to run
    start_ray()
    tuner_for(run.plan, sweep_dir, callbacks, skip=skip, retry_failed=retry_failed).fit()
    return run


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
