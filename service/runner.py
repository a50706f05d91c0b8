"""Start, resume and inspect sweeps: the work behind ``qsweep run`` / ``resume`` / ``status``.

The CLI only parses arguments and prints; everything that touches Ray or the results
location is here, so tests drive it directly.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import yaml

from service import storage
from service.errors import SweepError
from service.schema import SPEC_FILE, TRIALS_FILE
from service.sink import ParquetSink
from service.spec import SpecError, SweepSpec, parse_spec
from service.storage import read_results


def sweep_location(results: str, name: str) -> str:
    """``<results>/<name>``: absolute for a local path, unchanged scheme for a URI."""
    if "://" in results:
        return f"{results.rstrip('/')}/{name}"
    return os.path.abspath(os.path.join(os.path.expanduser(results), name))


def versions() -> dict[str, str]:
    import ray
    import torch

    from service import __version__

    return {"qsweep": __version__, "torch": torch.__version__, "ray": ray.__version__,
            "pyarrow": pa.__version__, "python": platform.python_version()}


def connect(address: str | None, dashboard: bool = True, dashboard_host: str = "127.0.0.1",
            dashboard_port: int = 8265, num_cpus: int | None = None) -> None:
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
        ray.init(address=address or None, log_to_driver=False)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host=dashboard_host,
             dashboard_port=dashboard_port, log_to_driver=False)


@dataclass
class SweepRun:
    spec: SweepSpec
    sweep_dir: str


def prepare(spec: SweepSpec, results: str | None = None, overwrite: bool = False) -> SweepRun:
    """Check the results location and store the validated spec beside the Parquet."""
    sweep_dir = sweep_location(results or spec.results, spec.name)
    fs, path = storage.resolve(sweep_dir)
    existing = storage.exists(fs, f"{path}/{TRIALS_FILE}")  # readable or not: it is a sweep's
    if existing and not overwrite:
        raise SweepError(f"{sweep_dir} already holds a sweep: `qsweep resume {sweep_dir}` continues it, "
                         f"--overwrite starts over")
    if overwrite and storage.exists(fs, path):
        fs.delete_dir(path)
    storage.write_text_atomic(fs, f"{path}/{SPEC_FILE}",
                              yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return SweepRun(spec, sweep_dir)


def load_stored_spec(sweep_dir: str) -> SweepSpec:
    fs, path = storage.resolve(sweep_dir)
    text = storage.read_text(fs, f"{path}/{SPEC_FILE}")
    if text is None:
        raise SweepError(f"{sweep_dir}: no {SPEC_FILE} here — is this a sweep's results directory?")
    try:
        return parse_spec(yaml.safe_load(text))
    except SpecError as err:
        raise SweepError(f"{sweep_dir}/{SPEC_FILE}: {err}") from None


def _total(spec: SweepSpec) -> int:
    main = len(spec.trials()) if spec.search.mode == "grid" else spec.search.num_samples
    return main + len(spec.pretrain_trials())


def _callbacks(run: SweepRun, live: bool | None) -> list[Any]:
    from service.progress import SweepProgress
    from service.tuner import all_planned

    planned = all_planned(run.spec)
    try:
        sink = ParquetSink(run.sweep_dir, run.spec.name, planned, versions())
    except (pa.ArrowException, OSError, ValueError) as err:  # corrupt, truncated or foreign Parquet
        raise SweepError(f"{run.sweep_dir}: cannot continue from unreadable results ({_first_line(err)})") from None
    return [sink, SweepProgress(planned, _total(run.spec), live=live)]


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:300]


def _pretrain_missing(run: SweepRun) -> bool:
    """Whether some pre-training checkpoint is not in ``<sweep>/stages/`` yet."""
    from service.spec import STAGE_PREFIX
    from service.tuner import stage_location

    fs, _ = storage.resolve(run.sweep_dir)
    for trial in run.spec.pretrain_trials():
        location = stage_location(run.sweep_dir, STAGE_PREFIX + trial.trial_id)
        if not storage.exists(fs, storage.resolve(location)[1]):
            return True
    return False


def _run_pretrain(run: SweepRun, live: bool | None, retry_failed: bool = False) -> None:
    """The float pre-training stage, unless its checkpoints exist; resumed if interrupted."""
    from service.tuner import PRETRAIN_TUNE_DIR, build_tuner, restore_tuner

    if not run.spec.pretrain_trials() or not _pretrain_missing(run):
        return
    fs, path = storage.resolve(run.sweep_dir)
    if storage.exists(fs, f"{path}/{PRETRAIN_TUNE_DIR}/tuner.pkl"):
        tuner = restore_tuner(run.spec, run.sweep_dir, _callbacks(run, live), retry_failed, PRETRAIN_TUNE_DIR)
    else:
        tuner = build_tuner(run.spec, run.sweep_dir, _callbacks(run, live), pretrain=run.spec.pretrain_trials())
    tuner.fit()
    if _pretrain_missing(run):
        raise SweepError(f"{run.sweep_dir}: the pre-training stage failed (see trials.parquet); "
                         "fine-tuning trials need its checkpoint")


def run_sweep(run: SweepRun, live: bool | None = None) -> None:
    from service.tuner import build_tuner

    _run_pretrain(run, live)
    build_tuner(run.spec, run.sweep_dir, _callbacks(run, live)).fit()


def _finished_trials(sweep_dir: str, retry_failed: bool) -> set[str]:
    """Trial ids trials.parquet records as final (failed ones too unless ``retry_failed``)."""
    fs, path = storage.resolve(sweep_dir)
    table = storage.read_parquet(fs, f"{path}/{TRIALS_FILE}")
    if table is None:
        return set()
    final = {"completed", "stopped"} | (set() if retry_failed else {"failed"})
    return {row["trial_id"] for row in table.select(["trial_id", "status"]).to_pylist() if row["status"] in final}


def resume_sweep(sweep_dir: str, retry_failed: bool = False, live: bool | None = None) -> SweepRun:
    """Finish the pre-training stage if needed, then continue (or start) the main sweep.

    Without Tune's state (``tune/tuner.pkl`` missing or empty: the driver died while
    starting, before Tune wrote it) the main sweep starts afresh from the stored spec; the
    Parquet is kept, and trials it records as finished are not run again.
    """
    from service.tuner import TUNE_DIR, build_tuner, restore_tuner

    run = SweepRun(load_stored_spec(sweep_dir), sweep_dir)
    fs, path = storage.resolve(sweep_dir)
    info = fs.get_file_info(f"{path}/{TUNE_DIR}/tuner.pkl")
    main_state = info.type == pafs.FileType.File and bool(info.size)
    _run_pretrain(run, live, retry_failed)
    if main_state:
        restore_tuner(run.spec, sweep_dir, _callbacks(run, live), retry_failed=retry_failed).fit()
    else:
        callbacks = _callbacks(run, live)  # the sink loads (and tidies) what the Parquet holds first
        skip = _finished_trials(sweep_dir, retry_failed) if run.spec.search.mode == "grid" else set()
        if not {t.trial_id for t in run.spec.trials()} <= skip:
            build_tuner(run.spec, sweep_dir, callbacks, skip=skip).fit()
    return run


def sweep_status(sweep_dir: str) -> dict[str, Any]:
    """Counts per status (pending = planned but never started) and the trials table."""
    spec = load_stored_spec(sweep_dir)
    try:
        trials, curves = read_results(sweep_dir)
    except (pa.ArrowException, OSError, ValueError) as err:  # corrupt, truncated, wrong schema or version
        raise SweepError(f"{sweep_dir}: unreadable results ({_first_line(err)})") from None
    table = trials.to_pandas() if trials is not None else None
    seen = table["status"].value_counts().to_dict() if table is not None else {}
    total = _total(spec)
    counts = {s: int(seen.get(s, 0)) for s in ("completed", "running", "failed", "stopped")}
    counts["pending"] = max(total - sum(counts.values()), 0)
    return {"spec": spec, "counts": counts, "trials": table,
            "curve_rows": 0 if curves is None else curves.num_rows, "total": total}


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
