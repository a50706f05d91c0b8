"""Fixtures shared by the service tests: in-process Ray on loopback, and the qsweep CLI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import ray

from tests.service.harness import Qsweep, cli_env, loopback_ray, short_tempdir


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module (2 CPUs, no dashboard), listening on loopback only."""
    with pytest.MonkeyPatch.context() as mp, loopback_ray(mp):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            assert ray.util.get_node_ip_address() == "127.0.0.1"
            yield
        finally:
            ray.shutdown()


@contextmanager
def local_qsweep() -> Iterator[Qsweep]:
    ray_tmp = short_tempdir("qsr-")
    cli = Qsweep(cli_env(ray_tmp))
    try:
        yield cli
    finally:
        cli.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def module_qsweep() -> Iterator[Qsweep]:
    """The qsweep CLI for a module-scoped sweep: embedded Ray in a RAY_TMPDIR of its own."""
    with local_qsweep() as cli:
        yield cli


@pytest.fixture
def qsweep() -> Iterator[Qsweep]:
    """The qsweep CLI for one test: embedded Ray in a RAY_TMPDIR of its own."""
    with local_qsweep() as cli:
        yield cli
