"""``service.ray_compat``: every Ray private name and undocumented Ray behaviour qsweep relies on,
behind one fence. One canary per touchpoint (``test_canary_<touchpoint>``), proof that each
canary fails loudly naming its touchpoint, and scans proving nothing outside the fence reaches
into Ray's internals.

Upgrading Ray: bump the pin in pyproject.toml, run this file, fix what the canaries name
(see ``service/ray_compat.py``'s docstring).
"""

from __future__ import annotations

import ast
import importlib
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from ray import tune

from service import ray_compat
from service.ray_compat import CANARIES, TOUCHPOINTS, RayChanged

ROOT = Path(__file__).resolve().parents[2]
FENCED = ("service", "trainers", "analysis", "contract")
FENCE = "service/ray_compat.py"


# ---------------------------------------------------------------------------------------------
# One canary per touchpoint
# ---------------------------------------------------------------------------------------------


def test_canary_count_callbacks_lightly():
    CANARIES["count_callbacks_lightly"]()


def test_canary_shorten_storage_errors():
    CANARIES["shorten_storage_errors"]()


def test_canary_keep_cloud_keys_out_of_runtime_env():
    CANARIES["keep_cloud_keys_out_of_runtime_env"]()


def test_canary_retry_budget():
    CANARIES["retry_budget"]()


def test_canary_dead_actor_text():
    CANARIES["dead_actor_text"]()


def test_canary_task_error_text():
    CANARIES["task_error_text"]()


def test_canary_trial_error_text():
    CANARIES["trial_error_text"]()


def test_canary_local_run_config():
    CANARIES["local_run_config"]()


def test_canary_has_tune_state():
    CANARIES["has_tune_state"]()


def test_canary_delete_trial_checkpoints():
    CANARIES["delete_trial_checkpoints"]()


def test_canary_quiet_snapshot_sync_warning():
    CANARIES["quiet_snapshot_sync_warning"]()


def test_every_touchpoint_has_its_canary_test_and_a_line_in_the_docstring():
    tests = {name for name in globals() if name.startswith("test_canary_")}
    doc = ray_compat.__doc__ or ""
    for touchpoint in TOUCHPOINTS:
        assert f"test_canary_{touchpoint}" in tests, f"no test_canary_{touchpoint}"
        assert f"``{touchpoint}``" in doc, f"{touchpoint} missing from ray_compat's docstring table"
    assert "Upgrade path" in doc and ray_compat.RAY_PIN in (ROOT / "pyproject.toml").read_text()


# ---------------------------------------------------------------------------------------------
# A real small Tune run: grid order, error text, checkpoints, on-disk state, restore
# ---------------------------------------------------------------------------------------------

GRID = ["t3", "t1", "boom", "t2"]  # not sorted: start order must be list order
SEEN: dict[str, list] = {}  # filled on the driver by Recorder (module-level: survives copies)


def _canary_trainable(config):
    if config["x"] == "boom":
        raise ValueError("canary boom")
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "state").write_text("1")
        tune.report({"value": 1}, checkpoint=tune.Checkpoint.from_directory(directory))


class Recorder(tune.Callback):
    def on_trial_start(self, iteration, trials, trial, **info):
        SEEN.setdefault("started", []).append(trial.config["x"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        _, before = ray_compat.trial_checkpoint_dirs(trial)
        ray_compat.delete_trial_checkpoints(trial)
        _, after = ray_compat.trial_checkpoint_dirs(trial)
        SEEN.setdefault("checkpoints", []).append((len(before), len(after)))

    def on_trial_error(self, iteration, trials, trial, **info):
        SEEN.setdefault("errors", []).append(ray_compat.trial_error_text(trial))


@pytest.fixture(scope="module")
def tune_run(ray_cluster, tmp_path_factory):
    SEEN.clear()
    storage = tmp_path_factory.mktemp("compat")
    tune.Tuner(
        _canary_trainable,
        param_space={"x": tune.grid_search(GRID)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(
            name="canary",
            storage_path=str(storage),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[Recorder()],
        ),
    ).fit()
    return storage / "canary"


def test_canary_grid_order(tune_run):
    """``service.stage_gate``: Tune starts pending trials in ``grid_search`` list order."""
    ray_compat.check_grid_order(SEEN.get("started", []), GRID)


def test_canary_trial_error_text_on_a_real_run(tune_run):
    (text,) = SEEN["errors"]
    assert text is not None, "ray_compat.trial_error_text: Tune recorded no error text"
    assert not text.startswith(ray_compat.FAILURE_HEADER), text
    assert text.splitlines()[-1].endswith("ValueError: canary boom"), text


def test_canary_delete_trial_checkpoints_on_a_real_run(tune_run):
    assert SEEN["checkpoints"] == [(1, 0)] * 3, (
        "ray_compat.delete_trial_checkpoints: Tune's checkpoint_* folders not found or kept: "
        f"(before, after) per trial {SEEN['checkpoints']}"
    )


def test_canary_has_tune_state_on_a_real_run(tune_run, tmp_path):
    fs = pafs.LocalFileSystem()
    pickled, snapshots = ray_compat.tune_state_files(fs, str(tune_run))
    layout = sorted(p.name for p in tune_run.iterdir())
    assert Path(pickled).is_file() and snapshots, f"ray_compat.has_tune_state: layout {layout}"
    assert ray_compat.has_tune_state(fs, str(tune_run))
    assert not ray_compat.has_tune_state(fs, str(tmp_path))
    Path(snapshots[-1]).write_text('{"truncated": ')
    assert not ray_compat.has_tune_state(fs, str(tune_run))


def test_canary_local_run_config_on_a_restore(tune_run):
    tuner = tune.Tuner.restore(str(tune_run), _canary_trainable, resume_errored=False)
    run_config = ray_compat.local_run_config(tuner)
    assert isinstance(run_config, tune.RunConfig) and run_config.name == "canary"
    assert ray_compat.local_run_config(tuner) is run_config


# ---------------------------------------------------------------------------------------------
# Each canary fails loudly, naming its touchpoint, when Ray changes what it relies on
# ---------------------------------------------------------------------------------------------


def _mod(name):
    return importlib.import_module(name)


def _no_binaries(mp):
    mp.setattr(ray_compat, "_RAY_BINARIES", ())


def _task_error_reworded(mp):
    from ray.exceptions import RayTaskError

    mp.setattr(RayTaskError, "as_instanceof_cause", lambda self: self)
    mp.setattr(RayTaskError, "__str__", lambda self: "task failed")


BREAKERS = {
    "count_callbacks_lightly: renamed": (
        "count_callbacks_lightly",
        lambda mp: mp.delattr(_mod("ray.air._internal.usage"), "_count_callbacks"),
    ),
    "count_callbacks_lightly: no longer called": (
        "count_callbacks_lightly",
        lambda mp: mp.setattr(_mod("ray.air._internal.usage"), "tag_callbacks", lambda cbs: True),
    ),
    "shorten_storage_errors": (
        "shorten_storage_errors",
        lambda mp: mp.setattr(
            _mod("ray.tune.execution.experiment_state"), "logger", logging.getLogger("ray.moved")
        ),
    ),
    "keep_cloud_keys_out_of_runtime_env": (
        "keep_cloud_keys_out_of_runtime_env",
        lambda mp: mp.delattr(_mod("ray.tune.execution.class_cache"), "ENV_VARS_TO_PROPAGATE"),
    ),
    "retry_budget: rule": (
        "retry_budget",
        lambda mp: mp.setattr(_mod("ray.tune.experiment").Trial, "should_recover", lambda s: True),
    ),
    "retry_budget: controller": (
        "retry_budget",
        lambda mp: mp.delattr(
            _mod("ray.tune.execution.tune_controller").TuneController, "_process_trial_failure"
        ),
    ),
    "dead_actor_text: generic line": (
        "dead_actor_text",
        lambda mp: mp.setattr(_mod("ray.exceptions").ActorDiedError, "BASE_ERROR_MSG", "gone."),
    ),
    "dead_actor_text: native wording": ("dead_actor_text", _no_binaries),
    "task_error_text": ("task_error_text", _task_error_reworded),
    "trial_error_text": (
        "trial_error_text",
        lambda mp: mp.delattr(_mod("ray.tune.experiment").Trial, "error_file"),
    ),
    "local_run_config": (
        "local_run_config",
        lambda mp: mp.delattr(_mod("ray.tune.impl.tuner_internal").TunerInternal, "get_run_config"),
    ),
    "has_tune_state": (
        "has_tune_state",
        lambda mp: mp.setattr(_mod("ray.tune.impl.tuner_internal"), "_TUNER_PKL", "tuner.pickle"),
    ),
    "delete_trial_checkpoints": (
        "delete_trial_checkpoints",
        lambda mp: mp.setattr(
            _mod("ray.train._internal.storage").StorageContext,
            "_make_checkpoint_dir_name",
            staticmethod(lambda index: f"ckpt_{index}"),
        ),
    ),
    "quiet_snapshot_sync_warning": (
        "quiet_snapshot_sync_warning",
        lambda mp: mp.setattr(_mod("ray.tune.constants"), "TUNE_ENV_VARS", set()),
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKERS))
def test_each_canary_fails_loudly_naming_its_touchpoint(case, monkeypatch):
    touchpoint, breaker = BREAKERS[case]
    breaker(monkeypatch)
    with pytest.raises(RayChanged, match=rf"^ray_compat\.{touchpoint} \(relied on by service/"):
        CANARIES[touchpoint]()


def test_every_canary_has_a_breaker():
    assert {touchpoint for touchpoint, _ in BREAKERS.values()} == set(CANARIES)


def test_the_grid_order_canary_fails_loudly():
    with pytest.raises(RayChanged, match=r"^ray_compat\.grid_order \(relied on by service/"):
        ray_compat.check_grid_order(["t1", "t3"], ["t3", "t1"])


def test_ray_compat_and_failure_text_import_no_ray():
    code = (
        "import sys, service.ray_compat, service.failure_text; "
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# The fence: nothing outside service/ray_compat.py reaches into Ray's internals
# ---------------------------------------------------------------------------------------------


def _sources() -> list[tuple[str, ast.Module]]:
    files = sorted(p for top in FENCED for p in (ROOT / top).rglob("*.py"))
    out = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel != FENCE:
            out.append((rel, ast.parse(path.read_text(), filename=rel)))
    return out


def _is_private_ray(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "ray" and any(part.startswith("_") for part in parts[1:])


def test_no_import_of_a_ray_internal_outside_ray_compat():
    """Every import in service/, trainers/, analysis/, contract/: no ``ray.*._internal`` /
    ``ray._private`` module, no leading-underscore name from a Ray module."""
    found = []
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(rel, node.lineno, a.name) for a in node.names if _is_private_ray(a.name)]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] != "ray":
                    continue
                if _is_private_ray(node.module):
                    found.append((rel, node.lineno, node.module))
                found += [
                    (rel, node.lineno, f"{node.module}.{a.name}")
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert found == [], f"Ray internals imported outside {FENCE} (move them there): {found}"


def test_the_import_scan_sees_private_imports():
    tree = ast.parse(
        "from ray.air._internal import usage\nimport ray._private.utils\n"
        "from ray.tune.impl.tuner_internal import _TUNER_PKL\nfrom ray import tune\n"
    )
    private = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Import)
        and any(_is_private_ray(a.name) for a in n.names)
        or isinstance(n, ast.ImportFrom)
        and (_is_private_ray(n.module) or any(a.name.startswith("_") for a in n.names))
    ]
    assert len(private) == 3


# Tune internals qsweep reaches by attribute (no import needed), and Tune's file names and
# wording: only service/ray_compat.py may use them.
RAY_ATTRIBUTES = {
    "_local_tuner",
    "_remote_tuner",
    "_count_callbacks",
    "_process_trial_failure",
    "_TUNER_PKL",
    "CKPT_FILE_TMPL",
    "ENV_VARS_TO_PROPAGATE",
    "run_metadata",
    "max_failures",
    "error_file",
    "get_error",
    "storage_filesystem",
    "trial_fs_path",
}
RAY_STRINGS = (
    "tuner.pkl",
    "experiment_state",
    "Failure # ",
    "ray::",
    "NODE_OUT_OF_MEMORY",
    "running low on memory",
    "its node has died",
    "killed by `ray.kill`",
    "Some common causes include",
    "before finishing this task",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S",
)
RAY_EXACT_STRINGS = {"checkpoint_", "The actor "}
# Uses still in files being refactored elsewhere; each must switch to its ray_compat function
# (see service/ray_compat.py), then leave this list.
PENDING: set[tuple[str, str]] = set()  # every touchpoint is behind the fence


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _ray_internals_used(rel: str, tree: ast.Module) -> set[tuple[str, str]]:
    docs, used = _docstrings(tree), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in RAY_ATTRIBUTES:
            used.add((rel, node.attr))
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
        ):
            text = node.value
            used.update((rel, s) for s in RAY_STRINGS if s in text)
            if text in RAY_EXACT_STRINGS:
                used.add((rel, text))
            if _is_private_ray(text) and text.replace(".", "").replace("_", "").isalnum():
                used.add((rel, text))  # a private Ray module by name (a logger, import_module)
    return used


def test_no_ray_internal_attribute_file_name_or_wording_outside_ray_compat():
    used = set().union(*(_ray_internals_used(rel, tree) for rel, tree in _sources()))
    unfenced = sorted(used - PENDING)
    assert unfenced == [], f"Ray internals used outside {FENCE} (move them there): {unfenced}"
    switched = sorted(PENDING - used)
    assert switched == [], (
        f"now behind the fence, remove from PENDING in tests/service/test_ray_compat.py: {switched}"
    )
