"""The CLI imports only what a command needs: ``qsweep status`` and ``report`` read Parquet
without torch or Ray, ``validate`` checks a spec without Ray; ``status`` answers fast."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.quick_golden import GOLDEN

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from service.cli import app
code = 0
try:
    app(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code or 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "ray", "trainers"})
print("LOADED=" + json.dumps({"heavy": heavy, "code": code}))
"""


def run_cli(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("LOADED=")]
    assert line, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(line[-1].removeprefix("LOADED="))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A finished sweep's folder as ``qsweep run`` leaves it: the golden quick sweep's trials
    and curves, the spec and the plan summary."""
    import pyarrow.parquet as pq
    import yaml

    from service.spec_loading import parse_spec
    from tests.service.quick_golden import shortened_quick_spec

    folder = tmp_path_factory.mktemp("results") / "quick-golden"
    (folder / "curves").mkdir(parents=True)
    shutil.copy(GOLDEN / "trials.parquet", folder / "trials.parquet")
    curves = pq.read_table(GOLDEN / "curves.parquet")
    for tid in set(curves.column("trial_id").to_pylist()):
        part = curves.filter(curves.column("trial_id").to_numpy(zero_copy_only=False) == tid)
        pq.write_table(part, folder / "curves" / f"{tid}.parquet")
    spec = shortened_quick_spec()
    (folder / "sweep.yaml").write_text(yaml.safe_dump(spec))
    (folder / "plan.json").write_text(json.dumps(parse_spec(spec).summary()))
    return folder


def test_status_imports_neither_torch_nor_ray(sweep_dir):
    assert run_cli("status", str(sweep_dir)) == {"heavy": [], "code": 0}


def test_report_imports_neither_torch_nor_ray(sweep_dir, tmp_path):
    loaded = run_cli("report", str(sweep_dir), "--out", str(tmp_path))
    assert loaded == {"heavy": [], "code": 0}
    assert (tmp_path / "report.html").is_file()


def test_validate_imports_no_ray():
    loaded = run_cli("validate", "examples/quick.yaml")
    assert loaded["code"] == 0 and "ray" not in loaded["heavy"]


def test_the_probe_sees_torch_when_a_command_imports_it(sweep_dir):
    """The check can fail: validate needs the estimators' configs, which live with torch."""
    assert "torch" in run_cli("validate", "examples/quick.yaml")["heavy"]


def test_status_on_the_quick_results_is_fast(sweep_dir):
    """Best of three, the whole command in a fresh interpreter (its imports included), in CPU
    seconds (user + system) of that process: wall time on a busy machine measures the load
    (2.7 s at load average 10 on 2 cores for 1.1 s of CPU), CPU time what status costs."""
    qsweep = Path(sys.executable).parent / "qsweep"
    command = [str(qsweep)] if qsweep.exists() else [sys.executable, "-m", "service.cli"]
    cpu = []
    for _ in range(3):
        proc = subprocess.Popen(
            [*command, "status", str(sweep_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output = proc.stdout.read()
        _, wait_status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
        proc.stdout.close()
        cpu.append(usage.ru_utime + usage.ru_stime)
        assert proc.returncode == 0, output
        assert "19 completed" in output
    # ~1.1 s on a 2-core machine, idle or busy; importing torch as well costs 3.3 s.
    assert min(cpu) < 2.5, cpu
