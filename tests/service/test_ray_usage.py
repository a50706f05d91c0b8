"""Ray Tune's callback telemetry is counted without importing mlflow or wandb
(``service.ray_compat``), and counts what Ray's own counting counts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from ray import tune
from ray.tune.logger import CSVLoggerCallback, LoggerCallback

from service.ray_compat import count_callbacks_by_name

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from ray import tune
from ray.air._internal import usage
from service.ray_compat import count_callbacks_lightly
if sys.argv[1] == "light":
    count_callbacks_lightly()
usage.tag_callbacks([tune.Callback()])
print("LOADED=" + json.dumps(sorted({"mlflow", "wandb"} & set(sys.modules))))
"""


def imported_trackers(mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("LOADED=")]
    assert line, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(line[-1].removeprefix("LOADED="))


def test_counting_a_runs_callbacks_imports_no_tracker_library() -> None:
    assert imported_trackers("ray") == ["mlflow", "wandb"]  # Ray's own counting imports both
    assert imported_trackers("light") == []


class OurLogger(LoggerCallback):
    pass


def rays_own_counting():
    """Ray's ``_count_callbacks`` from a fresh copy of its module (this process may have
    replaced the loaded one's)."""
    spec = importlib.util.find_spec("ray.air._internal.usage")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._count_callbacks


def test_counts_equal_rays_own_for_built_in_custom_and_logger_callbacks() -> None:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    callbacks = [
        tune.Callback(),
        tune.Callback(),
        OurLogger(),
        CSVLoggerCallback(),
        MLflowLoggerCallback(tracking_uri="file:///nonexistent"),
        "not a callback",
    ]
    ours = dict(count_callbacks_by_name(callbacks))
    assert ours == {
        "CustomCallback": 2,
        "CustomLoggerCallback": 1,
        "CSVLoggerCallback": 1,
        "MLflowLoggerCallback": 1,
    }
    assert ours == dict(rays_own_counting()(callbacks))
