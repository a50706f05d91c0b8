"""Experiment trackers (``tracking:``, ``service.tracking``) end to end: real sweeps through
the ``qsweep`` CLI on an embedded Ray, read back with MLflow's client and from W&B's own
offline run files, compared with the Parquet (the record)."""

from __future__ import annotations

import importlib.util
import json
import math
import socket
import struct
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from wandb.proto import wandb_internal_pb2

from service.errors import SpecError
from service.spec import input_problems, parse_spec
from tests.service.harness import explain, read_state, user_error, write_spec

METRICS = ("eval_loss", "train_loss", "eval_metric", "forwards", "backwards", "flops", "wall_s")
SPEC = {"grid": {"estimators": ["ste", "fogzo"]}, "trial": {"num_evals": 3}}


def _values(values) -> list:
    """Comparable values: NaN (the train loss before the first step) equals NaN."""
    return ["nan" if isinstance(v, float) and math.isnan(v) else v for v in values]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, module_qsweep):
    """A two-trial sweep with both trackers: MLflow in a file store, W&B offline. W&B's
    server address is a local socket that accepts nothing: any connection would queue up."""
    tmp = tmp_path_factory.mktemp("tracked")
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    uri = (tmp / "mlruns").as_uri()
    spec_file = write_spec(
        tmp,
        "tracked",
        **SPEC,
        checkpoint_min_s=600,  # no checkpoints: evaluations reach Tune in batches
        tracking={
            "mlflow": {"tracking_uri": uri, "experiment": "qsweep-test"},
            "wandb": {"project": "qsweep-test", "mode": "offline"},
        },
    )
    env = {
        **module_qsweep.env,
        "WANDB_DIR": str(tmp / "wandb"),
        "WANDB_SILENT": "true",
        "WANDB_MODE": "offline",
        "WANDB_BASE_URL": f"http://127.0.0.1:{listener.getsockname()[1]}",
    }
    (tmp / "wandb").mkdir()
    run = module_qsweep("run", spec_file, "--results", tmp / "results", "--num-cpus", 2, env=env)
    assert run.returncode == 0, explain(run)
    listener.setblocking(False)
    connections = 0
    while True:
        try:
            listener.accept()[0].close()
            connections += 1
        except BlockingIOError:
            break
    listener.close()
    rows, curves = read_state(tmp / "results" / "tracked")
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows.values()), rows
    assert all(len(curves[tid]) == 4 for tid in rows), curves  # steps 0 and 3 evaluations
    results = [
        len(path.read_text().splitlines())
        for path in (tmp / "results" / "tracked" / "tune").glob("*/result.json")
    ]
    assert len(results) == 2 and max(results) < 4, results  # a batched result: several rows
    return tmp, uri, run, connections, rows, curves


def test_each_trial_is_one_mlflow_run_holding_its_parquet_curve(tracked, monkeypatch):
    _, uri, run, _, rows, curves = tracked
    assert "warning:" not in run.stderr, explain(run)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(experiment_names=["qsweep-test"], output_format="list")
    assert sorted(r.info.run_name for r in found) == sorted(rows)
    client = MlflowClient(uri)
    for mlflow_run in found:
        tid = mlflow_run.info.run_name
        params, config = mlflow_run.data.params, json.loads(rows[tid]["config"])
        assert mlflow_run.info.status == "FINISHED"
        assert params["trial_id"] == tid == mlflow_run.data.tags["qsweep.trial_id"]
        assert params["estimator"] == rows[tid]["estimator"] == config["estimator"]
        assert float(params["lr"]) == config["lr"] and params["bits"] == str(config["bits"])
        assert "planned_id" not in params  # our config, not Tune's
        for metric in METRICS:
            history = client.get_metric_history(mlflow_run.info.run_id, metric)
            history = sorted(history, key=lambda m: m.step)
            assert [m.step for m in history] == [c["step"] for c in curves[tid]], (tid, metric)
            expected = [float(c[metric]) for c in curves[tid]]
            assert _values(m.value for m in history) == _values(expected), (tid, metric)


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
    tmp, _, _, connections, rows, curves = tracked
    assert connections == 0  # offline: nothing reached W&B's server address
    runs = sorted((tmp / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs
    seen = {}
    for run_dir in runs:
        (log_file,) = run_dir.glob("run-*.wandb")
        records = _wandb_records(log_file)
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
        assert [h["step"] for h in history] == [c["step"] for c in curves[tid]]
        for metric in METRICS:
            logged, expected = [h[metric] for h in history], [c[metric] for c in curves[tid]]
            assert _values(logged) == _values(expected), metric
        seen[tid] = len(history)
    assert seen == {tid: 4 for tid in rows}


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
