"""Submit a sweep to a running Ray cluster as a Ray Job.

The job's working directory holds only the spec (the cluster has qsweep installed, see
docker/); its entrypoint is ``qsweep run`` against the cluster the job runs on. A
submitted sweep runs on the cluster, so its results must be somewhere the cluster and
the user can both reach: an absolute path on shared storage or a URI (``s3://...``).
"""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from service.errors import SweepError
from service.spec import SweepSpec

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def submit_sweep(spec_file: Path, spec: SweepSpec, address: str, results: str | None, wait: bool,
                 echo: Callable[[str], None] = print) -> tuple[str, str]:
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    location = results or spec.results
    if "://" not in location and not Path(location).is_absolute():
        raise SweepError(f"results: {location!r} is relative, but a submitted sweep runs on the cluster — "
                         f"give an absolute path on shared storage or a URI (--results s3://bucket/sweeps)")
    try:
        client = JobSubmissionClient(address)
    except AuthenticationError as err:  # Ray sends the token only where RAY_AUTH_MODE=token
        raise SweepError(f"the Ray job server at {address} wants its token: {str(err).splitlines()[0]} "
                         f"(export RAY_AUTH_MODE=token and give the cluster's token as RAY_AUTH_TOKEN, "
                         f"RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)") from None
    except Exception as err:  # connection refused, bad URL: one line for the user
        raise SweepError(f"cannot reach the Ray job server at {address}: {str(err).splitlines()[0]}") from None
    with tempfile.TemporaryDirectory() as workdir:
        # The validated spec with its scale applied: the job runs exactly what was checked here.
        (Path(workdir) / "sweep.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        job_id = client.submit_job(
            entrypoint=f"qsweep run sweep.yaml --results {shlex.quote(location)}",
            runtime_env={"working_dir": workdir},
            metadata={"qsweep_sweep": spec.name},
        )
    if not wait:
        return job_id, client.get_job_status(job_id).value
    status = client.get_job_status(job_id).value
    while status not in TERMINAL:
        time.sleep(1.0)
        status = client.get_job_status(job_id).value
    echo(client.get_job_logs(job_id))
    return job_id, status
