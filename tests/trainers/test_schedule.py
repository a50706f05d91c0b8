"""lr schedules: warm-up then constant / linear / cosine decay over budget progress."""

import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainers import ConfigError, TrialConfig, run_trial
from trainers.estimators.mezo import MeZO
from trainers.schedule import LR_SCHEDULES, check_schedule, lr_at

BASE = 0.3


def expected(schedule, warmup, progress):
    """The spec's formulas written out independently of trainers.schedule."""
    if progress < warmup:
        return BASE * progress / warmup
    t = (progress - warmup) / (1 - warmup)
    return {
        "constant": BASE,
        "linear": BASE * (1 - t),
        "cosine": BASE * (1 + math.cos(math.pi * t)) / 2,
    }[schedule]


@pytest.mark.parametrize("schedule", LR_SCHEDULES)
@pytest.mark.parametrize("warmup", [0.0, 0.2, 0.5])
def test_lr_at_start_end_of_warmup_halfway_and_end(schedule, warmup):
    halfway = warmup + (1 - warmup) / 2  # half of the decay phase
    points = [0.0, warmup, halfway, 0.5, 1.0]
    for p in points:
        assert lr_at(BASE, schedule, warmup, p) == pytest.approx(
            expected(schedule, warmup, p), abs=1e-15
        )
    assert lr_at(BASE, schedule, warmup, warmup) == pytest.approx(
        BASE
    )  # warm-up ends at the full lr
    if warmup:
        assert lr_at(BASE, schedule, warmup, 0.0) == 0.0
        assert lr_at(BASE, schedule, warmup, warmup / 2) == pytest.approx(BASE / 2)
    if schedule == "constant":
        assert lr_at(BASE, schedule, warmup, 1.0) == BASE
    else:  # both decays reach 0 at the end of the budget and are at half the lr halfway through it
        assert lr_at(BASE, schedule, warmup, 1.0) == pytest.approx(0.0, abs=1e-15)
        assert lr_at(BASE, schedule, warmup, halfway) == pytest.approx(BASE / 2)


def test_cosine_without_warmup_is_half_the_lr_at_half_the_budget_and_above_linear_before():
    assert lr_at(BASE, "cosine", 0.0, 0.5) == pytest.approx(BASE / 2)
    for p in (0.1, 0.25, 0.4):
        assert lr_at(BASE, "cosine", 0.0, p) > lr_at(BASE, "linear", 0.0, p)
        assert lr_at(BASE, "cosine", 0.0, 1 - p) < lr_at(BASE, "linear", 0.0, 1 - p)


def test_constant_without_warmup_is_exactly_the_base_lr():
    assert all(lr_at(BASE, "constant", 0.0, p) == BASE for p in (0.0, 0.37, 0.999, 1.0))


@pytest.mark.parametrize("schedule", LR_SCHEDULES)
def test_decays_are_monotone_and_progress_past_the_budget_is_clamped(schedule):
    lrs = [lr_at(BASE, schedule, 0.1, k / 100) for k in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(BASE, schedule, 0.1, 1.3) == lr_at(BASE, schedule, 0.1, 1.0)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"lr_schedule": "cosin"}, r"lr_schedule 'cosin' is not one of constant, linear, cosine"),
        ({"lr_schedule": "step"}, r"lr_schedule 'step'"),
        ({"warmup": 1.0}, r"warmup must be .*\[0, 1\), got 1.0"),
        ({"warmup": -0.1}, r"warmup must be .*got -0.1"),
        ({"warmup": "10%"}, r"warmup must be .*got '10%'"),
    ],
)
def test_bad_schedule_settings_are_one_line_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match) as err:
        TrialConfig.from_dict(bad)
    assert "\n" not in str(err.value)


def test_defaults_are_todays_constant_lr():
    cfg = TrialConfig()
    assert (cfg.lr_schedule, cfg.warmup) == ("constant", 0.0)
    check_schedule("linear", 0)  # an integer warm-up of 0 is fine
    with pytest.raises(ValueError, match="warmup"):
        check_schedule("linear", True)


# --- the schedule inside run_trial -------------------------------------------------------

STEPS = 12


@pytest.fixture
def used_lrs(monkeypatch):
    """The lr every update actually used: the optimizer's at each ``step()``, or the in-place
    estimator's ``self.lr`` as its ``step`` starts."""
    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append([g["lr"] for g in opt.param_groups])
    )
    original = MeZO.step

    def mezo_step(self, *args, **kwargs):
        seen.append([self.lr])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MeZO, "step", mezo_step)
    yield seen
    handle.remove()


def _trial(**overrides):
    config = {
        "estimator": "ste",
        "bits": 2,
        "steps": STEPS,
        "num_evals": 4,
        "lr": 0.05,
        "threads": 1,
        "lr_schedule": "linear",
        "warmup": 0.25,
        **overrides,
    }
    reports, states = [], []
    resume = config.pop("resume_state", None)
    run_trial(
        config,
        lambda m, state: (reports.append(m), states.append(state)),
        save_state=True,
        resume_state=resume,
    )
    return config, reports, states


@pytest.mark.parametrize("estimator,lr", [("ste", 0.05), ("mezo", 1e-3)])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_every_update_uses_the_scheduled_lr(used_lrs, estimator, lr, schedule):
    config, reports, _ = _trial(estimator=estimator, lr=lr, lr_schedule=schedule)
    want = [lr_at(lr, schedule, 0.25, k / STEPS) for k in range(STEPS)]
    assert [g[0] for g in used_lrs] == pytest.approx(want, abs=0)
    assert all(len(set(g)) == 1 for g in used_lrs)  # every param group
    assert (
        want[0] == 0.0 and max(want) == pytest.approx(lr) and want[-1] < lr / 2
    )  # a real schedule
    # current_lr is the lr of the step just before each report (the first step's at step 0)
    assert [r["current_lr"] for r in reports] == [want[max(r["step"] - 1, 0)] for r in reports]


def test_constant_schedule_keeps_the_configured_lr(used_lrs):
    _, reports, _ = _trial(lr_schedule="constant", warmup=0.0)
    assert [g[0] for g in used_lrs] == [0.05] * STEPS
    assert {r["current_lr"] for r in reports} == {0.05}


def _strip(reports):
    """Without wall time, and without layer_bits, which the first report of every call carries."""
    return [{k: v for k, v in r.items() if k not in ("wall_s", "layer_bits")} for r in reports]


@pytest.mark.parametrize("estimator,budget", [("fogzo", "steps"), ("mezo", "flops")])
def test_resume_replays_the_lr_sequence_and_the_weights(used_lrs, estimator, budget):
    overrides = {
        "estimator": estimator,
        "lr": 0.05 if estimator == "fogzo" else 1e-3,
        "lr_schedule": "cosine",
    }
    if budget == "flops":  # a FLOP budget of about STEPS steps: the schedule follows FLOP progress
        _, one, _ = _trial(**overrides, steps=1, num_evals=1)
        overrides.update(steps=None, flops=(STEPS - 0.5) * one[-1]["flops"])
    used_lrs.clear()
    _, full, full_states = _trial(**overrides)
    full_lrs = list(used_lrs)
    used_lrs.clear()
    _, resumed, resumed_states = _trial(**overrides, resume_state=full_states[2])
    assert resumed[0]["step"] == full[3]["step"] > full_states[2]["counters"]["step"]
    assert used_lrs == full_lrs[-len(used_lrs) :] and len(used_lrs) < len(full_lrs)
    assert len({g[0] for g in used_lrs}) > 1  # the resumed part does decay
    assert _strip(resumed) == _strip(full[3:]) and resumed[0]["layer_bits"] == full[0]["layer_bits"]
    for name, value in full_states[-1]["model"].items():
        assert torch.equal(resumed_states[-1]["model"][name], value), name
