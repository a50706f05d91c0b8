"""service.failures: which exceptions are retried, the one-line reasons, and FailOnce against
Tune's own retry rule (``Trial.should_recover``). The real sweep is
tests/reliability/test_retries.py."""

from __future__ import annotations

import math
import re
import traceback

import pytest
import torch
from ray.core.generated.common_pb2 import ActorDiedErrorContext
from ray.exceptions import ActorDiedError, RayActorError, RaySystemError, RayTaskError
from ray.tune.experiment import Trial

from service import failures
from service.limits import TrialLimitExceeded
from trainers.config import ConfigError
from trainers.data.base import DatasetError
from trainers.trial import TrialDiverged

DIVERGED = TrialDiverged("nspsa: training loss became inf at step 205")


@pytest.mark.parametrize(
    "err",
    [
        DIVERGED,
        ConfigError("lr must be >= 0, got -1"),
        DatasetError("mnist: data_dir /x is not a directory"),
        ValueError("mlp: option hidden=-1 must be a positive integer"),
        TypeError("bad"),
        KeyError("x"),
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x10 and 12x10)"),
        AssertionError(),
    ],
)
def test_the_trials_own_errors_are_deterministic(err):
    assert failures.is_deterministic(err)


@pytest.mark.parametrize(
    "err",
    [
        TrialLimitExceeded("time limit of 10 s exceeded (ran 10.1 s)"),
        OSError(5, "Input/output error"),
        FileNotFoundError("checkpoint"),
        ConnectionResetError(),
        MemoryError(),
        torch.OutOfMemoryError("CUDA out of memory"),
        RaySystemError("GCS unreachable"),
        KeyboardInterrupt(),
        SystemExit(0),
    ],
)
def test_infrastructure_faults_and_limits_are_retried(err):
    assert not failures.is_deterministic(err)


def test_a_reason_is_one_line_and_names_the_type_unless_the_message_explains_itself():
    assert failures.reason(DIVERGED) == "nspsa: training loss became inf at step 205"
    assert (
        failures.reason(TrialLimitExceeded("memory limit of 1 MB exceeded"))
        == "memory limit of 1 MB exceeded"
    )
    assert (
        failures.reason(ValueError("mlp: option hidden=-1\nmore detail"))
        == "ValueError: mlp: option hidden=-1"
    )
    assert failures.reason(KeyError("planned_id")) == "KeyError: 'planned_id'"
    assert failures.reason(AssertionError()) == "AssertionError"
    long = failures.reason(ValueError("x" * 5000))
    assert len(long) == failures.MAX_REASON_CHARS and long.endswith("…")


def tune_text(err: BaseException) -> str:
    """What Tune's error file holds for ``err`` (``Trial.handle_error`` writes ``str(exc)``),
    as ``sink.trial_error_text`` reads it back (ANSI colours stripped)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(err))


def raised_in_trainable(err: Exception) -> RayTaskError:
    """``err`` as the driver receives it from a trainable that raised it."""
    try:
        raise err
    except Exception as caught:
        return RayTaskError(
            "train",
            traceback.format_exc(),
            caught,
            proctitle="ray::ImplicitFunc.train()",
            pid=7,
            ip="127.0.0.1",
        ).as_instanceof_cause()


@pytest.mark.parametrize(
    "err",
    [
        DIVERGED,
        TrialLimitExceeded("time limit of 10 s exceeded (ran 10.1 s)"),
        ConfigError("lr must be >= 0, got -1"),
        ValueError("mlp: option hidden=-1 must be a positive integer"),
        OSError(28, "No space left on device"),
        KeyError("planned_id"),
        TrialDiverged("first line\nsecond line"),
        AssertionError(),
    ],
)
def test_the_driver_reads_the_same_reason_from_tunes_text_as_the_trainable_from_the_exception(err):
    assert failures.summarize(tune_text(raised_in_trainable(err))) == failures.reason(err)


def actor_died(error_message: str) -> ActorDiedError:
    return ActorDiedError(
        ActorDiedErrorContext(
            class_name="ImplicitFunc",
            actor_id=b"\1" * 16,
            pid=4242,
            node_ip_address="10.0.0.7",
            error_message=error_message,
        )
    )


def test_the_driver_summarizes_a_dead_actor_in_one_line():
    died = actor_died(
        "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR "
        "Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of "
        "file. Some common causes include: (1) the process was killed by the OOM killer"
    )
    assert failures.summarize(tune_text(died)) == (
        "worker died (pid 4242, 10.0.0.7): The actor is dead because its worker process has died. "
        "Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a "
        "connection error code 2. End of file."
    )
    assert failures.summarize(tune_text(ActorDiedError())) == (
        "worker died: The actor died unexpectedly before finishing this task."
    )
    node = actor_died("The actor died because its node has died. Node Id: ab12")
    assert failures.summarize(tune_text(node)) == (
        "node lost (pid 4242, 10.0.0.7): The actor died because its node has died. Node Id: ab12"
    )
    oom = actor_died(
        "The actor is dead because its worker process has died. Worker exit type: "
        "NODE_OUT_OF_MEMORY Worker exit detail: Task was killed due to the node running low on "
        "memory."
    )
    assert failures.summarize(tune_text(oom)).startswith(
        "out of memory (pid 4242, 10.0.0.7): The actor is dead"
    )
    killed = RayActorError(None, "The actor is dead because it was killed by `ray.kill`.")
    assert (
        failures.summarize(tune_text(killed))
        == "actor killed: The actor is dead because it was killed by `ray.kill`."
    )


def test_text_that_is_no_traceback_gives_its_last_line_and_no_text_gives_none():
    assert failures.summarize("something odd\n  happened\n\n") == "happened"
    assert (
        failures.summarize("ray::ImplicitFunc.train() (pid=1)\n<no traceback>") == "<no traceback>"
    )
    assert failures.summarize("") is None and failures.summarize(None) is None
    assert failures.last_line("a\nb\n\n") == "b" and failures.last_line(None) is None


def test_the_failure_result_carries_the_reason_the_traceback_and_no_metric_value():
    try:
        raise DIVERGED
    except TrialDiverged as err:
        result = failures.failure_result(err, "eval_loss")
    assert result[failures.FAILURE_KEY] == "nspsa: training loss became inf at step 205"
    assert result[failures.TRACEBACK_KEY].startswith("Traceback (most recent call last)")
    assert result[failures.TRACEBACK_KEY].endswith(
        "TrialDiverged: nspsa: training loss became inf at step 205"
    )
    assert math.isnan(result["eval_loss"]) and "eval_loss" not in failures.failure_result(DIVERGED)


@pytest.mark.parametrize("failed_before", [0, 1])
def test_fail_once_leaves_tune_no_retry_for_a_reported_failure_only(failed_before):
    """Tune counts the failure (``handle_error``) and then asks ``should_recover``."""
    callback = failures.FailOnce(retries=2)
    trial = Trial("train_one", stub=True, max_failures=0)
    trial.run_metadata.num_failures = failed_before
    callback.on_trial_start(iteration=0, trials=[trial], trial=trial)
    assert trial.max_failures == 2
    callback.on_trial_result(
        iteration=0, trials=[trial], trial=trial, result={"step": 0, "eval_loss": 1.0}
    )
    assert trial.max_failures == 2  # an ordinary result changes nothing
    callback.on_trial_result(
        iteration=0,
        trials=[trial],
        trial=trial,
        result=failures.failure_result(DIVERGED, "eval_loss"),
    )
    trial.run_metadata.num_failures += 1
    assert not trial.should_recover()

    other = Trial("train_one", stub=True, max_failures=2)  # a failure nothing reported: retried
    other.run_metadata.num_failures = failed_before + 1
    assert other.should_recover()
    callback.on_trial_start(
        iteration=0, trials=[trial], trial=trial
    )  # a rerun (resume --retry-failed)
    assert trial.max_failures == 2
