"""Experiment trackers (``tracking:``, ``service.tracking``) end to end: real sweeps through
the ``qsweep`` CLI on an embedded Ray, read back with MLflow's client (a ``file:`` store and
a ``sqlite:`` one) and from W&B's own offline run files, compared with the Parquet (the
record). W&B has no public reader of an offline run in this version (no history file is
written offline): its ``.wandb`` log is read with W&B's own protobuf classes
(``wandb.proto``), in LevelDB's log format, which W&B's ``.wandb`` files use."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import pickle
import secrets
import socket
import struct
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from wandb.proto import wandb_internal_pb2

import service.tracking
from service.errors import SpecError
from service.plan import input_problems
from service.report_batch import EVALUATIONS
from service.spec_loading import parse_spec
from service.tracking import QsweepMLflowCallback, QsweepWandbCallback
from tests.service.harness import explain, read_state, user_error, write_spec

METRICS = ("eval_loss", "train_loss", "eval_metric", "forwards", "backwards", "flops", "wall_s")
SPEC = {"grid": {"estimators": ["ste", "fogzo"]}, "trial": {"num_evals": 3}}
PLANTED = {  # keys in the driver's environment: none may reach a file or a log
    "WANDB_API_KEY": secrets.token_hex(20),
    "MLFLOW_TRACKING_TOKEN": secrets.token_urlsafe(30),
    "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(20),
}


def _values(values) -> list:
    """Comparable values: NaN (the train loss before the first step) equals NaN."""
    return ["nan" if isinstance(v, float) and math.isnan(v) else v for v in values]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sweep(tmp: Path, cli, name: str, tracking: dict, **env: str):
    """A two-trial sweep whose evaluations reach Tune in batches (no checkpoints): (the
    finished run, its trial rows, its curves)."""
    spec_file = write_spec(tmp, name, **SPEC, checkpoint_min_s=600, tracking=tracking)
    run = cli(
        "run", spec_file, "--results", tmp / "results", "--num-cpus", 2, env={**cli.env, **env}
    )
    assert run.returncode == 0, explain(run)
    rows, curves = read_state(tmp / "results" / name)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows.values()), rows
    assert all(len(curves[tid]) == 4 for tid in rows), curves  # steps 0 and 3 evaluations
    results = [
        len(path.read_text().splitlines())
        for path in (tmp / "results" / name / "tune").glob("*/result.json")
    ]
    assert len(results) == 2 and max(results) < 4, results  # a batched result: several rows
    return run, rows, curves


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, module_qsweep):
    """Both trackers: MLflow in a ``file:`` store, W&B offline, tracker keys planted in the
    environment. W&B's server address is a local socket that accepts nothing: any
    connection would queue up."""
    tmp = tmp_path_factory.mktemp("tracked")
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    uri = (tmp / "mlruns").as_uri()
    (tmp / "wandb").mkdir()
    run, rows, curves = _sweep(
        tmp,
        module_qsweep,
        "tracked",
        {
            "mlflow": {"tracking_uri": uri, "experiment": "qsweep-test"},
            "wandb": {"project": "qsweep-test", "mode": "offline"},
        },
        WANDB_DIR=str(tmp / "wandb"),
        WANDB_SILENT="true",
        WANDB_MODE="offline",
        WANDB_BASE_URL=f"http://127.0.0.1:{listener.getsockname()[1]}",
        **PLANTED,
    )
    listener.setblocking(False)
    connections = 0
    while True:
        try:
            listener.accept()[0].close()
            connections += 1
        except BlockingIOError:
            break
    listener.close()
    return tmp, uri, run, connections, rows, curves


@pytest.fixture(scope="module")
def sqlite_tracked(tmp_path_factory, module_qsweep):
    """MLflow alone, in a ``sqlite:`` store (MLflow's recommended local one)."""
    tmp = tmp_path_factory.mktemp("sqlite")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    run, rows, curves = _sweep(
        tmp, module_qsweep, "lite", {"mlflow": {"tracking_uri": uri, "experiment": "qsweep-test"}}
    )
    return tmp, uri, run, None, rows, curves


@pytest.mark.parametrize("store", ["tracked", "sqlite_tracked"])
def test_each_trial_is_one_mlflow_run_holding_its_parquet_curve(store, request, monkeypatch):
    _, uri, run, _, rows, curves = request.getfixturevalue(store)
    assert "warning:" not in run.stderr, explain(run)
    if uri.startswith("file:"):
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(experiment_names=["qsweep-test"], output_format="list")
    assert sorted(r.info.run_name for r in found) == sorted(rows)
    client = MlflowClient(uri)
    sweep = {"tracked": "tracked", "sqlite_tracked": "lite"}[store]
    for mlflow_run in found:
        tid = mlflow_run.info.run_name
        params, config = mlflow_run.data.params, json.loads(rows[tid]["config"])
        tags = mlflow_run.data.tags
        assert mlflow_run.info.status == "FINISHED"
        assert params["trial_id"] == tid == tags["qsweep.trial_id"]
        assert tags["qsweep.sweep"] == params["sweep"] == sweep
        assert tags["qsweep.tune_trial_id"] and tags["qsweep.tune_trial_id"] != tid
        assert params["estimator"] == rows[tid]["estimator"] == config["estimator"]
        assert float(params["lr"]) == config["lr"] and params["bits"] == str(config["bits"])
        assert "planned_id" not in params  # our config, not Tune's
        for metric in ("step", *METRICS):
            history = client.get_metric_history(mlflow_run.info.run_id, metric)
            pairs = sorted((m.step, m.value) for m in history)
            assert [s for s, _ in pairs] == [c["step"] for c in curves[tid]], (tid, metric)
            expected = [float(c[metric]) for c in curves[tid]]
            assert _values([v for _, v in pairs]) == _values(expected), (tid, metric)


def _wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a ``.wandb`` file: W&B's 7-byte header, then LevelDB's log format
    (32 KiB blocks of chunks: crc32, length, type FULL/FIRST/MIDDLE/LAST, data)."""
    data, records, pending = path.read_bytes(), [], b""
    assert data[:4] == b":W&B", data[:8]
    offset = 7
    while offset + 7 <= len(data):
        room = 32768 - offset % 32768
        if room < 7:  # a block's tail too short for a chunk header is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        if length == 0 and kind == 0:
            offset += room
            continue
        pending += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_each_trial_is_one_offline_wandb_run_holding_its_parquet_curve(tracked):
    """Read as soon as ``qsweep run`` returned: each run's log is complete (its exit record
    written), each evaluation one history row."""
    tmp, _, _, connections, rows, curves = tracked
    assert connections == 0  # offline: nothing reached W&B's server address
    runs = sorted((tmp / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs
    seen = {}
    for run_dir in runs:
        (log_file,) = run_dir.glob("run-*.wandb")
        records = _wandb_records(log_file)
        kinds = [r.WhichOneof("record_type") for r in records]
        assert kinds[-1] == "exit" and kinds.count("exit") == 1, kinds  # finished, whole
        (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
        assert exit_record.exit_code == 0
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        config = {item.key: json.loads(item.value_json) for item in run.config.update}
        tid = run.display_name
        assert config["trial_id"] == tid and config["estimator"] == rows[tid]["estimator"]
        assert "planned_id" not in config and run.run_group == "tracked"
        assert run.project == "qsweep-test"
        history = [
            {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in r.history.item
            }
            for r in records
            if r.WhichOneof("record_type") == "history"
        ]
        assert [h["_step"] for h in history] == list(range(len(history)))  # W&B's own count
        assert [h["step"] for h in history] == [c["step"] for c in curves[tid]]
        for metric in METRICS:
            logged, expected = [h[metric] for h in history], [c[metric] for c in curves[tid]]
            assert _values(logged) == _values(expected), metric
        seen[tid] = len(history)
    assert seen == {tid: 4 for tid in rows}


def _strings_of_parquet(path: Path) -> str:
    table = pq.read_table(path)
    return "\n".join(
        str(v)
        for column in table.columns
        if pa.types.is_string(column.type)
        for v in column.to_pylist()
    )


def test_no_tracker_key_reaches_tuner_pkl_parquet_tracker_files_ray_logs_or_output(
    tracked, module_qsweep
):
    tmp, _, run, _, _, _ = tracked
    sweep_dir = tmp / "results" / "tracked"
    assert list(sweep_dir.rglob("tuner.pkl")), sorted(sweep_dir.rglob("*"))
    ray_logs = [p for p in Path(module_qsweep.env["RAY_TMPDIR"]).rglob("logs/*") if p.is_file()]
    assert ray_logs, "no Ray logs found to check"
    places = {"stdout": run.stdout.encode(), "stderr": run.stderr.encode()}
    for path in [*tmp.rglob("*"), *ray_logs]:  # Parquet, tuner.pkl, mlruns, wandb, Ray's logs
        if path.is_file():
            places[str(path)] = path.read_bytes()
            if path.suffix == ".parquet":  # Parquet pages are compressed: the strings too
                places[f"{path} (decoded)"] = _strings_of_parquet(path).encode()
    assert any(p.endswith(".wandb") for p in places) and any("mlruns" in p for p in places)
    leaks = [
        (var, where)
        for var, value in PLANTED.items()
        for where, data in places.items()
        if value.encode() in data
    ]
    assert leaks == []


def test_callbacks_pickle_only_their_spec_settings(monkeypatch):
    """Tune pickles its callbacks into ``tuner.pkl``: settings only, no key, client or thread
    (a started callback pickles as a fresh one)."""
    for var, value in PLANTED.items():
        monkeypatch.setenv(var, value)
    planned = {"t1": {"estimator": "ste"}}
    made = [
        QsweepWandbCallback(planned, "s", "p", "offline", "team", "/tmp/x"),
        QsweepMLflowCallback(planned, "s", "sqlite:////tmp/x/mlflow.db", "e"),
    ]
    for callback in made:
        callback._submit(lambda: None)  # a worker thread running: must not travel
        data = pickle.dumps(callback)
        assert not any(value.encode() in data for value in PLANTED.values())
        back = pickle.loads(data)
        assert type(back) is type(callback) and back.settings() == callback.settings()
        assert back._worker is None and not back.broken
        callback.on_experiment_end([])


class _Trial:
    """What the callbacks read of a Tune trial."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.config = trial_id, {"lr": 0.1}


def _drive(callback, records: dict[str, list[dict]]) -> None:
    """One stage in-process: each trial's records in one batched result; the first trial
    ends, the others are still running when the stage ends (an interrupted stage)."""
    callback.setup()
    trials = [_Trial(tune_id) for tune_id in records]
    for trial in trials:
        callback.log_trial_start(trial)
    for trial in trials:
        batch = records[trial.trial_id]
        callback.log_trial_result(1, trial, {**batch[-1], EVALUATIONS: batch})
    callback.log_trial_end(trials[0])
    callback.on_experiment_end(trials)


RECORDS = {
    "t_00000": [{"step": s, "eval_loss": 1.0 / (s + 1), "progress": s / 4} for s in range(5)],
    "t_00001": [{"step": s, "eval_loss": float(s)} for s in (0, 7)],
}


def test_a_stage_end_leaves_every_mlflow_run_written_and_ended(tmp_path):
    """No wait, no sleep: when ``on_experiment_end`` returns, the worker thread has written
    every evaluation and ended every run (KILLED: still running at the stage's end)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _drive(QsweepMLflowCallback({}, "s", uri, "e"), RECORDS)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert {r.info.run_name: r.info.status for r in runs} == {
        "t_00000": "FINISHED",
        "t_00001": "KILLED",
    }
    for run in runs:
        expected = RECORDS[run.info.run_name]
        history = client.get_metric_history(run.info.run_id, "eval_loss")
        assert sorted((m.step, m.value) for m in history) == [
            (r["step"], r["eval_loss"]) for r in expected
        ]


def test_a_stage_end_leaves_every_offline_wandb_run_complete(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    callback = QsweepWandbCallback({}, "s", "p", "offline", wandb_dir=str(tmp_path))
    _drive(callback, RECORDS)
    assert not callback.broken
    logs = {p.name: _wandb_records(p) for p in tmp_path.glob("wandb/offline-run-*/run-*.wandb")}
    assert sorted(logs) == [f"run-{tune_id}.wandb" for tune_id in RECORDS]
    for name, records in logs.items():
        tune_id = name[4:-6]
        exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        assert exits == [0 if tune_id == "t_00000" else 1]
        steps = [
            json.loads(item.value_json)
            for r in records
            if r.WhichOneof("record_type") == "history"
            for item in r.history.item
            if (item.key or "/".join(item.nested_key)) == "step"
        ]
        assert steps == [r["step"] for r in RECORDS[tune_id]]


def test_a_wandb_online_run_without_a_key_costs_one_warning(tmp_path, monkeypatch, capsys):
    """No key anywhere: one warning, no prompt, every later hook a no-op."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "online")

    callback = QsweepWandbCallback({}, "s", "p", "online", wandb_dir=str(tmp_path))
    callback.setup()
    for step in range(3):
        callback.log_trial_result(step, _Trial("abc_00000"), {"step": step, "eval_loss": 1.0})
    callback.log_trial_end(_Trial("abc_00000"))
    callback.on_experiment_end([_Trial("abc_00000")])
    warnings = capsys.readouterr().err.splitlines()
    assert [w[:35] for w in warnings] == ["warning: wandb tracking is off for "], warnings
    assert "no API key" in warnings[0] and callback.broken
    assert not list(tmp_path.rglob("*.wandb"))


def test_the_module_uses_no_private_ray_name():
    """Only Ray's public API: no ``_internal`` module, no ``_``-prefixed name from Ray."""
    tree = ast.parse(Path(service.tracking.__file__).read_text())
    private, ray_names = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray":
            parts = node.module.split(".")
            private += [node.module for part in parts if part.startswith("_")]
            private += [a.name for a in node.names if a.name.startswith("_")]
            ray_names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ray":
                    private += [alias.name for p in alias.name.split(".") if p.startswith("_")]
                    ray_names.add((alias.asname or alias.name).split(".")[0])
    for node in ast.walk(tree):  # ray.x._y, tune._z: an attribute of a Ray name
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in ray_names:
                private.append(ast.unparse(node))
    assert "ray" in ray_names or "tune" in ray_names, ray_names  # the scan saw Ray's imports
    assert private == []
    source = Path(service.tracking.__file__).read_text()
    assert "_internal" not in source and "ray.air" not in source


def test_an_unreachable_mlflow_server_costs_one_warning_and_no_results(tmp_path, qsweep):
    spec_file = write_spec(
        tmp_path,
        "unreachable",
        tracking={"mlflow": {"tracking_uri": f"http://127.0.0.1:{_closed_port()}"}},
    )
    run = qsweep("run", spec_file, "--results", tmp_path / "results", "--num-cpus", 2)
    assert run.returncode == 0, explain(run)
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: mlflow tracking is off")
    assert "Parquet results are unaffected" in warnings[0]
    rows, curves = read_state(tmp_path / "results" / "unreachable")
    ((tid, row),) = rows.items()
    assert row["status"] == "completed" and len(curves[tid]) == 4


BASE = {"name": "t", "grid": {"estimators": ["ste"]}, "budget": {"steps": 10}}


@pytest.mark.parametrize(
    ("tracking", "message"),
    [
        ({"mlflow": {"api_key": "x"}}, "tracking.mlflow: api_key: secrets do not belong"),
        ({"mlflow": {"token": "x"}}, "set MLFLOW_TRACKING_TOKEN"),
        ({"mlflow": {"password": "x"}}, "MLFLOW_TRACKING_PASSWORD"),
        ({"wandb": {"project": "p", "api_key": "x"}}, "set WANDB_API_KEY in the environment"),
        ({"mlflow": {"tracking_uri": "https://u:pw@host"}}, "tracking_uri: holds a password"),
        ({"mlflow": {"uri": "x"}}, "tracking.mlflow.uri: unknown key"),
        ({"neptune": {}}, "tracking.neptune: unknown key"),
        ({"wandb": {"mode": "offline"}}, "tracking.wandb.project: Field required"),
        ({"wandb": {"project": "p", "mode": "dryrun"}}, "tracking.wandb.mode: Input should be"),
        ({"wandb": {"project": " "}}, "tracking.wandb.project: must not be empty"),
    ],
)
def test_bad_tracking_specs_are_one_line_errors(tracking, message):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "tracking": tracking}, check_files=False)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_bare_mlflow_path_becomes_an_absolute_file_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = parse_spec({**BASE, "tracking": {"mlflow": {"tracking_uri": "mlruns"}}})
    assert plan.spec.tracking.mlflow.tracking_uri == (tmp_path / "mlruns").as_uri()


def test_a_tracker_whose_package_is_missing_names_its_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    spec = {**BASE, "tracking": {"wandb": {"project": "p"}}}
    with pytest.raises(SpecError, match=r"pip install -e '\.\[wandb\]'"):
        parse_spec(spec)  # qsweep run: refused before anything starts
    plan = parse_spec(spec, check_files=False)  # validate warns, submit leaves it to the job
    assert input_problems(plan) == [
        "tracking.wandb: the wandb package is not installed: pip install -e '.[wandb]'"
    ]


def test_the_cli_refuses_a_secret_in_the_spec_in_one_line(tmp_path, qsweep):
    spec_file = write_spec(
        tmp_path, "secret", tracking={"wandb": {"project": "p", "api_key": "0123abcd"}}
    )
    line = user_error(qsweep("validate", spec_file, timeout=120))
    assert line.startswith("error: tracking.wandb: api_key: ") and "WANDB_API_KEY" in line
    assert "0123abcd" not in line
