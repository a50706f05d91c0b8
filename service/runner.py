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
    existing = storage.read_parquet(fs, f"{path}/{TRIALS_FILE}")
    if existing is not None and not overwrite:
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


def _callbacks(run: SweepRun, live: bool | None) -> list[Any]:
    from service.progress import SweepProgress

    planned = {t.trial_id: t.config for t in run.spec.trials()}
    total = len(planned) if run.spec.search.mode == "grid" else run.spec.search.num_samples
    return [ParquetSink(run.sweep_dir, run.spec.name, planned, versions()),
            SweepProgress(planned, total, live=live)]


def run_sweep(run: SweepRun, live: bool | None = None) -> None:
    from service.tuner import build_tuner

    build_tuner(run.spec, run.sweep_dir, _callbacks(run, live)).fit()


def resume_sweep(sweep_dir: str, retry_failed: bool = False, live: bool | None = None) -> SweepRun:
    from service.tuner import restore_tuner

    run = SweepRun(load_stored_spec(sweep_dir), sweep_dir)
    fs, path = storage.resolve(sweep_dir)
    if not storage.exists(fs, f"{path}/tune/tuner.pkl"):
        raise SweepError(f"{sweep_dir}: no Tune state to resume (tune/tuner.pkl missing); start it with qsweep run")
    restore_tuner(run.spec, sweep_dir, _callbacks(run, live), retry_failed=retry_failed).fit()
    return run


def sweep_status(sweep_dir: str) -> dict[str, Any]:
    """Counts per status (pending = planned but never started) and the trials table."""
    spec = load_stored_spec(sweep_dir)
    trials, curves = read_results(sweep_dir)
    table = trials.to_pandas() if trials is not None else None
    seen = table["status"].value_counts().to_dict() if table is not None else {}
    total = len(spec.trials()) if spec.search.mode == "grid" else spec.search.num_samples
    counts = {s: int(seen.get(s, 0)) for s in ("completed", "running", "failed", "stopped")}
    counts["pending"] = max(total - sum(counts.values()), 0)
    return {"spec": spec, "counts": counts, "trials": table,
            "curve_rows": 0 if curves is None else curves.num_rows, "total": total}


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
