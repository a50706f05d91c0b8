"""The pre-training stage and its fine-tuning trials in one Tune run (grid sweeps).

A separate Tune run for the stage costs a second Tune start and stop and fresh worker
processes (imports, first-call set-up): seconds, more than a short sweep's trials. So a
grid sweep puts the stage's trials first in its one grid and each fine-tuning trial waits,
inside its trainable, until its stage's model file exists. Tune starts pending trials in
grid order, so every stage trial holds a slot before any trial that waits for it: waiting
never starves the stage. Trials that train from scratch sit between them in the grid and
fill the other slots meanwhile.

A stage trial that fails for good leaves a marker beside its (missing) model file,
written by the driver (``StageFailures`` in ``service.tuner``); its waiting trials then
fail with one line naming it, a deterministic failure (no retry). Ray-free: paths and
waiting only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from contract import storage
from contract.storage import first_line

STAGES_DIR = "stages"
FAILED_SUFFIX = ".failed"
POLL_S = 0.2


class StageFailed(RuntimeError):
    """The stage a fine-tuning trial starts from failed: this trial cannot run."""


def stage_model_path(sweep_dir: str, stage_trial_id: str) -> str:
    """``<sweep>/stages/<stage trial id>.pt``: where the stage leaves its model."""
    return f"{sweep_dir.rstrip('/')}/{STAGES_DIR}/{stage_trial_id}.pt"


def _marker(sweep_dir: str, stage_trial_id: str) -> str:
    return stage_model_path(sweep_dir, stage_trial_id) + FAILED_SUFFIX


def stage_done(sweep_dir: str, stage_trial_id: str) -> bool:
    fs, path = storage.resolve(stage_model_path(sweep_dir, stage_trial_id))
    return storage.exists(fs, path)


def mark_failed(sweep_dir: str, stage_trial_id: str, reason: str | None) -> None:
    """Tell the stage's waiting trials it failed (and why, in one line)."""
    fs, path = storage.resolve(_marker(sweep_dir, stage_trial_id))
    storage.write_text_atomic(fs, path, first_line(reason or "no reason recorded"))


def clear_failed(sweep_dir: str, stage_trial_id: str) -> None:
    """Before a stage runs again (``resume --retry-failed``): its trials may wait again."""
    fs, path = storage.resolve(_marker(sweep_dir, stage_trial_id))
    if storage.exists(fs, path):
        fs.delete_file(path)


def wait_for_stage(
    sweep_dir: str,
    stage_trial_id: str,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once the stage's model file exists; ``StageFailed`` once its marker does."""
    model_fs, model_path = storage.resolve(stage_model_path(sweep_dir, stage_trial_id))
    marker_fs, marker_path = storage.resolve(_marker(sweep_dir, stage_trial_id))
    while not storage.exists(model_fs, model_path):
        if storage.exists(marker_fs, marker_path):
            with marker_fs.open_input_stream(marker_path) as stream:
                reason = stream.readall().decode(errors="replace").strip()
            raise StageFailed(f"its pre-training stage {stage_trial_id} failed: {reason}")
        sleep(poll_s)
