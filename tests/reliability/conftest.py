"""Fixtures of the reliability tests: the qsweep CLI with a RAY_TMPDIR of its own (as in
tests/service, reused from there), and one real finished sweep shared by the security and
bad-input tests."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.reliability.helpers import free_port, listening_addresses, wait_for
from tests.service.conftest import local_qsweep
from tests.service.harness import Qsweep, cli_env, explain, short_tempdir, write_spec


@pytest.fixture
def qsweep() -> Iterator[Qsweep]:
    """The qsweep CLI for one test: embedded Ray in a RAY_TMPDIR of its own."""
    with local_qsweep() as cli:
        yield cli


@dataclass
class FinishedSweep:
    """A sweep run through ``qsweep run`` with the dashboard on and secrets in its environment."""

    spec_file: Path
    sweep_dir: Path
    qsweep: Qsweep
    secrets: dict[str, str]
    dashboard_port: int
    dashboard_listen: set[str]  # addresses the dashboard's port listened on while it ran
    ss_output: str  # `ss -ltnp` for that port while it ran ("" without ss)
    outputs: dict[str, subprocess.CompletedProcess] = field(
        default_factory=dict
    )  # run, status, report
    tracker_dirs: tuple[Path, ...] = ()  # the MLflow file store and W&B's offline runs

    @property
    def ray_tmp(self) -> Path:
        return Path(self.qsweep.env["RAY_TMPDIR"])


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory) -> Iterator[FinishedSweep]:
    """Two tiny trials run with credential-like variables set (a cluster token, cloud keys,
    tracker keys) and both experiment trackers on (MLflow in a file store, W&B offline, so
    their callbacks and W&B's logging actors run), the embedded dashboard on a free port with
    the default host; then ``status`` and ``report``. Tests only read it (copy it before
    changing anything)."""
    tmp = tmp_path_factory.mktemp("finished")
    planted = {
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "HF_TOKEN": "hf_" + secrets.token_hex(17),
        "WANDB_API_KEY": secrets.token_hex(20),
        "MLFLOW_TRACKING_TOKEN": secrets.token_urlsafe(30),
        "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(20),
    }
    ray_tmp = short_tempdir("qsr-")
    mlruns, wandb_dir = tmp / "mlruns", tmp / "wandb"
    wandb_dir.mkdir()
    cli = Qsweep(cli_env(ray_tmp, **planted, WANDB_DIR=str(wandb_dir), WANDB_SILENT="true"))
    try:
        spec_file = write_spec(
            tmp,
            "finished",
            grid={"estimators": ["ste", "fogzo"]},
            trial={"num_evals": 3},
            budget={"steps": 40},
            tracking={
                "mlflow": {"tracking_uri": mlruns.as_uri()},
                "wandb": {"project": "finished", "mode": "offline"},
            },
        )
        port = free_port()
        driver = cli.start(
            "run",
            spec_file,
            "--results",
            tmp / "results",
            "--dashboard-port",
            port,
            "--num-cpus",
            2,
        )
        listen = wait_for(lambda: listening_addresses(port), 120, "the dashboard to listen", driver)
        ss = shutil.which("ss")
        ss_output = (
            subprocess.run([ss, "-ltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
            if ss
            else ""
        )
        out, err = driver.communicate(timeout=300)
        run = subprocess.CompletedProcess(driver.args, driver.returncode, out, err)
        assert run.returncode == 0, explain(run)
        sweep_dir = tmp / "results" / "finished"
        done = FinishedSweep(
            spec_file,
            sweep_dir,
            cli,
            planted,
            port,
            listen,
            ss_output,
            {"run": run},
            (mlruns, wandb_dir),
        )
        done.outputs["status"] = cli("status", sweep_dir)
        done.outputs["report"] = cli("report", sweep_dir)
        for name, result in done.outputs.items():
            assert result.returncode == 0, (name, explain(result))
        yield done
    finally:
        cli.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)
