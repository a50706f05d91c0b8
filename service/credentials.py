"""Keep cloud keys out of Ray's logs.

Tune copies ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` /
``AWS_SECURITY_TOKEN`` from the driver's environment into every trainable's runtime env
(``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``, a Ray internal fenced in
``service.ray_compat.drop_propagated_env_vars``), and Ray's runtime-env agent writes that
runtime env, keys included, in plain text to ``runtime_env_agent.log``. qsweep drops those names
from the set before Tune creates a trial: on the embedded Ray the workers inherit the driver's
environment anyway, and cluster nodes should get their own credentials (instance role, or the
variables set where ``ray start`` runs). Set ``QSWEEP_PROPAGATE_CLOUD_KEYS=1`` to keep Tune's
behaviour.
"""

from __future__ import annotations

import os

from service.ray_compat import drop_propagated_env_vars

CLOUD_KEYS = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}
)
OPT_OUT = "QSWEEP_PROPAGATE_CLOUD_KEYS"


def keep_cloud_keys_out_of_runtime_env() -> None:
    """Stop Tune from putting cloud keys into trainables' runtime env (and so Ray's logs)."""
    if os.environ.get(OPT_OUT, "") in {"1", "true", "yes"}:
        return
    drop_propagated_env_vars(CLOUD_KEYS)
