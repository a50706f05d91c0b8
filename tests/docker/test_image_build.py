"""docker/Dockerfile built for real and smoke-tested inside the image (docker/build-and-smoke.sh).

No registry image can be pulled and no container run here, so the script builds a stand-in for
rayproject/ray:2.60.0-py311-cpu from ``debootstrap`` (docker/ray-standin.Containerfile), builds
the image on it with podman (chroot isolation), and enters the image's filesystem with chroot
as its user: ``qsweep validate examples/quick.yaml`` and one ``python -m trainers.run`` trial
run there. Minutes (about 5 on 2 cores the first time, the Debian and PyPI downloads
included); slow, and it needs root and Debian's podman, buildah and debootstrap (.ci/run
installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docker" / "build-and-smoke.sh"
TOOLS = ("podman", "buildah", "debootstrap")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed (apt-get install -y podman buildah debootstrap)",
)
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: debootstrap, chroot and mounts")
def test_the_cpu_image_builds_and_runs_a_validate_and_a_trial():
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=2300,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "== SMOKE OK: localhost/qsweep:cpu-smoke" in done.stdout

    # The image's config: a non-root numeric user, token auth on, the HEALTHCHECK kept.
    assert "user=1000:100 workdir=/home/ray/qsweep" in done.stdout
    assert "env RAY_AUTH_MODE=token" in done.stdout
    assert "52365/api/healthz" in done.stdout

    # The CPU build of torch (not PyPI's CUDA build) and the project's Ray, on Python 3.11.
    (versions,) = [line for line in done.stdout.splitlines() if line.startswith("python ")]
    words = versions.split()
    assert words[1].startswith("3.11.") and words[3] == "2.60.0", versions
    assert words[5].endswith("+cpu") and words[7] == "None", versions

    # qsweep validate prints the sweep's trial table.
    assert "quick: 36 trials" in done.stdout
    assert "ste-int2-mlp-digits-s0-" in done.stdout

    # One trial, one JSON object per evaluation; the last is the final one and has learned.
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"step"')]
    assert [r["step"] for r in rows] == [0, 20, 40, 60]
    final = rows[-1]
    assert final["done"] is True and final["metric_name"] == "accuracy"
    assert final["eval_metric"] > 0.5 and final["eval_loss"] < rows[0]["eval_loss"]
