"""Pure-PyTorch side of qsweep: quantizers, gradient estimators, models, data, one trial.

Never imports Ray: everything here runs and tests without a cluster.
"""

from trainers.config import ConfigError, TrialConfig
from trainers.trial import TrialDiverged, run_trial

__all__ = ["ConfigError", "TrialConfig", "TrialDiverged", "run_trial"]
