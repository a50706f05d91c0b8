"""Nobody let in: the embedded dashboard listens on loopback only unless asked (and then
qsweep warns), the docs say how to reach it safely, and no credential from the environment
ends up in the Parquet, the report, Tune's files, the experiment trackers' runs, Ray's logs
or the CLI's output.

``qsweep submit`` against a cluster with token authentication is covered end to end in
tests/service/test_cluster.py (with the token, a wrong token and none).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.cli import warn_if_dashboard_exposed
from tests.service.harness import user_error

ROOT = Path(__file__).resolve().parents[2]


def test_the_embedded_dashboard_listens_on_loopback_only(finished_sweep):
    assert finished_sweep.dashboard_listen == {"127.0.0.1"}, finished_sweep.dashboard_listen
    if finished_sweep.ss_output:  # the same seen by ss: one listener, on 127.0.0.1
        listeners = [line for line in finished_sweep.ss_output.splitlines() if "LISTEN" in line]
        assert (
            len(listeners) == 1 and f"127.0.0.1:{finished_sweep.dashboard_port}" in listeners[0]
        ), finished_sweep.ss_output


def test_a_dashboard_host_beyond_loopback_prints_a_warning(finished_sweep):
    """Against a sweep that exists already, so the command stops (exit 2) before starting Ray:
    the warning comes first, and nothing is bound to 0.0.0.0 by the test."""
    cli, spec, results = (
        finished_sweep.qsweep,
        finished_sweep.spec_file,
        finished_sweep.sweep_dir.parent,
    )
    exposed = cli("run", spec, "--results", results, "--dashboard-host", "0.0.0.0", timeout=120)
    assert exposed.returncode == 2
    lines = [line for line in exposed.stderr.splitlines() if line.strip()]
    assert (
        lines[0].startswith("warning: --dashboard-host 0.0.0.0: the Ray dashboard")
        and "SSH tunnel" in lines[0]
    )
    assert lines[1].startswith("error: ") and "already holds a sweep" in lines[1]
    default = cli("run", spec, "--results", results, timeout=120)
    assert "already holds a sweep" in user_error(default)  # one line: no warning for 127.0.0.1


@pytest.mark.parametrize(
    ("host", "warns"),
    [
        ("0.0.0.0", True),
        ("::", True),
        ("10.1.2.3", True),
        ("head.example", True),
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("127.0.1.1", False),
    ],
)
def test_which_dashboard_hosts_warn(host, warns, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    warn_if_dashboard_exposed(True, host, None)
    assert capsys.readouterr().err.startswith("warning: ") == warns
    warn_if_dashboard_exposed(
        False, host, None
    )  # no dashboard, or joining a cluster: nothing to say
    warn_if_dashboard_exposed(True, host, "127.0.0.1:6379")
    assert capsys.readouterr().err == ""


def test_the_docs_say_to_reach_the_dashboard_through_an_ssh_tunnel():
    usage = (ROOT / "docs" / "usage.md").read_text()  # its "Dashboards" section
    assert "ssh -L 8265:127.0.0.1:8265" in usage and "0.0.0.0" in usage


def _strings_of_parquet(path: Path) -> str:
    table = pq.read_table(path)
    return "\n".join(
        str(v)
        for column in table.columns
        if pa.types.is_string(column.type)
        for v in column.to_pylist()
    )


def _leaks(secrets: dict[str, str], places: dict[str, bytes]) -> list[tuple[str, str]]:
    return [
        (var, where)
        for var, value in secrets.items()
        for where, data in places.items()
        if value.encode() in data
    ]


def _ray_logs(finished_sweep) -> dict[str, bytes]:
    logs = {str(p): p.read_bytes() for p in finished_sweep.ray_tmp.rglob("logs/*") if p.is_file()}
    assert logs, "no Ray logs found to check"
    return logs


def test_no_credential_reaches_parquet_reports_tune_files_or_cli_output(finished_sweep):
    sweep_dir = finished_sweep.sweep_dir
    assert (sweep_dir / "report.html").is_file() and list((sweep_dir / "tune").iterdir())
    row = pq.read_table(sweep_dir / "trials.parquet").to_pylist()[0]
    assert row["config"] and row["versions"]  # the columns that could carry one are filled

    places: dict[str, bytes] = {}
    for path in sweep_dir.rglob(
        "*"
    ):  # Parquet, curves, report.html, plots, sweep.yaml, Tune's files
        if path.is_file():
            places[str(path)] = path.read_bytes()
            if path.suffix == ".parquet":  # the strings decoded too: Parquet pages are compressed
                places[f"{path} (decoded)"] = _strings_of_parquet(path).encode()
    tracked = [p for d in finished_sweep.tracker_dirs for p in d.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in tracked), tracked  # both trackers wrote runs
    assert any(p.parent.name == "metrics" for p in tracked), tracked
    places.update({str(path): path.read_bytes() for path in tracked})
    for name, result in finished_sweep.outputs.items():
        places[f"qsweep {name} stdout"] = result.stdout.encode()
        places[f"qsweep {name} stderr"] = result.stderr.encode()
    assert len(places) > 20, sorted(places)
    assert _leaks(finished_sweep.secrets, places) == []


def test_no_cluster_token_api_key_or_cloud_key_reaches_rays_logs(finished_sweep):
    """Cloud keys included: Tune would copy AWS_* from the driver into every trainable's
    runtime env, which Ray's runtime-env agent logs in plain text; ``service.credentials``
    stops that. So would Ray's ``WandbLoggerCallback`` with WANDB_API_KEY (its logging
    actor's runtime env); ``service.tracking`` creates that actor without it."""
    assert any(k.startswith("AWS_") for k in finished_sweep.secrets)
    assert {"WANDB_API_KEY", "MLFLOW_TRACKING_TOKEN"} <= finished_sweep.secrets.keys()
    assert _leaks(finished_sweep.secrets, _ray_logs(finished_sweep)) == []
