"""The time-budget planner on a fake clock: durations, the steps that fit (against a step-by-step
count), simulated runs with warm-up, drift and long epochs ending within 5 % of the budget,
re-plans, the decay's kept plan, and a budget too short for one epoch."""

import math

import pytest

from ssmad.engine.time_budget import (
    MEASURED_STEPS,
    TOLERANCE,
    WARMUP_STEPS,
    BudgetPlanner,
    check_budget_flags,
    format_duration,
    parse_duration,
    steps_that_fit,
)


class FakeClock:
    """Seconds that move only when a test advances them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("text, seconds", [("20m", 1200), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), ("2m30s", 150), (" 1H ", 3600)])
def test_durations_are_read_in_hours_minutes_and_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "20", "20 min", "m", "1h-5m", "0s", "0m0s"])
def test_bad_durations_are_refused_with_an_example(text):
    with pytest.raises(ValueError, match="--time-budget"):
        parse_duration(text)


def test_durations_are_written_back_shortest():
    assert [format_duration(s) for s in (5400, 1200, 90, 0.4, 3601)] == ["1h30m", "20m", "1m30s", "0s", "1h1s"]


def test_epochs_and_max_steps_are_refused_beside_a_budget():
    check_budget_flags(None, 3, 10)
    check_budget_flags(60.0, None, None)
    with pytest.raises(ValueError, match="leave out --epochs and --max-steps"):
        check_budget_flags(60.0, 3, 10)
    with pytest.raises(ValueError, match="leave out --max-steps"):
        check_budget_flags(60.0, None, 10)


def count_step_by_step(seconds, step, epoch_end, left_in_epoch, per_epoch):
    """Reference: take steps one at a time while the step (and an epoch end before it) still fits."""
    count, in_epoch = 0, per_epoch - left_in_epoch
    while True:
        cost = step + (epoch_end if in_epoch == per_epoch else 0.0)
        if cost > seconds + 1e-9:
            return count
        seconds -= cost
        in_epoch = 1 if in_epoch == per_epoch else in_epoch + 1
        count += 1


@pytest.mark.parametrize("seconds", [0.0, 0.5, 3.0, 9.99, 10.0, 31.0, 77.7, 250.0])
@pytest.mark.parametrize("left_in_epoch", [0, 1, 4])
def test_steps_that_fit_match_a_step_by_step_count(seconds, left_in_epoch):
    assert steps_that_fit(seconds, 1.0, 2.5, left_in_epoch, 4) == count_step_by_step(seconds, 1.0, 2.5, left_in_epoch, 4)


def simulate(budget, steps_per_epoch, step_time, startup=30.0, val_images=20, per_image=0.1, save=0.5, decay_at=None):
    """Run the trainer's calls to a planner on a fake clock; returns (wall seconds, planner, lr decay steps seen)."""
    clock = FakeClock()
    began = clock()
    clock.advance(startup)  # model, data, feature caching
    planner = BudgetPlanner(budget, steps_per_epoch, val_images, decay_at, clock=clock, started=began)

    def validate():
        clock.advance(per_image * val_images)
        planner.record_inference(per_image * val_images, val_images)

    def total():
        return planner.plan.total_steps if planner.plan else math.inf

    validate()  # step 0
    step = in_epoch = 0
    decayed_at_total = []
    while step < total():
        if decay_at is not None and planner.plan and step >= int(decay_at * total()):
            decayed_at_total.append(total())
        planner.step_begins()
        clock.advance(step_time(step))
        step += 1
        in_epoch += 1
        planner.step_ends()
        if planner.due:
            planner.replan(step, in_epoch, "plan")
        if in_epoch == steps_per_epoch or step >= total():
            ended = clock()
            in_epoch = 0
            validate()
            clock.advance(save)
            planner.record_save(save)
            planner.record_epoch_end(clock() - ended)
            if planner.measured and step < total():
                planner.replan(step, 0, "re-plan")
    clock.advance(save)  # the calibration reuses the last validation; the final checkpoint
    return clock() - began, planner, decayed_at_total


def warm_then_drifting(first=20.0, base=2.0, drift=0.15, period=200):
    """A slow first step (compilation), then steps whose time drifts by +-``drift``."""
    return lambda step: first if step == 0 else base * (1 + drift * math.sin(2 * math.pi * step / period))


@pytest.mark.parametrize("budget", [300.0, 1200.0, 3600.0])
@pytest.mark.parametrize("steps_per_epoch", [3, 13, 60])
def test_a_simulated_run_ends_within_five_percent_of_its_budget(budget, steps_per_epoch):
    wall, planner, _ = simulate(budget, steps_per_epoch, warm_then_drifting())
    assert abs(wall - budget) <= TOLERANCE * budget, (wall, [p.total_steps for p in planner.plans])


def test_a_machine_that_slows_down_is_followed_by_the_re_plans():
    slowing = lambda step: 20.0 if step == 0 else 2.0 * (1 + 0.2 * min(step / 300, 1))  # noqa: E731
    wall, planner, _ = simulate(1200.0, 13, slowing)
    assert abs(wall - 1200.0) <= TOLERANCE * 1200.0
    totals = [plan.total_steps for plan in planner.plans]
    assert len(totals) > 10 and totals[-1] < totals[0]  # the first plan assumed the fast steps
    assert planner.plans[0].at_step == WARMUP_STEPS + MEASURED_STEPS


def test_short_epochs_are_planned_as_whole_epochs():
    _, planner, _ = simulate(1200.0, 13, warm_then_drifting())
    assert planner.plan.total_steps % 13 == 0


def test_a_decayed_schedule_keeps_its_plan_once_the_decay_began():
    wall, planner, decayed_at_total = simulate(1200.0, 13, warm_then_drifting(drift=0.1), decay_at=0.8)
    assert abs(wall - 1200.0) <= TOLERANCE * 1200.0
    assert decayed_at_total and set(decayed_at_total) == {planner.plan.total_steps}
    kept = 0
    for before, after in zip(planner.plans, planner.plans[1:]):
        if after.at_step > int(0.8 * before.total_steps):  # a decayed step has run
            assert after.total_steps == before.total_steps and "plan kept" in after.reason
            kept += 1
    assert kept >= 2


def test_a_budget_too_short_for_one_epoch_trains_the_timed_steps_and_says_what_would_do():
    wall, planner, _ = simulate(40.0, 13, lambda step: 2.0, startup=30.0)
    first = planner.plans[0]
    assert first.total_steps == WARMUP_STEPS + MEASURED_STEPS
    assert "too short for one epoch (13 steps at 2 s each" in first.warning
    # one epoch: 30 s start-up + 2 s validation + 3 steps, then 10 steps of 2 s and 2 s of calibration = 60 s, + 10 %
    assert first.warning.endswith("give --time-budget 1m6s or more for a full epoch")


def test_a_resumed_planner_keeps_the_plan_and_the_spent_time():
    _, planner, _ = simulate(300.0, 13, warm_then_drifting())
    record = planner.record(global_step=20, epoch=1)
    clock = FakeClock()
    resumed = BudgetPlanner(300.0, 13, 20, clock=clock, record=record)
    assert resumed.plan.total_steps == record["planned_steps"] and not resumed.due
    clock.advance(12.5)
    assert resumed.elapsed() == pytest.approx(record["spent_seconds"] + 12.5)
    assert [plan.total_steps for plan in resumed.plans] == [plan["total_steps"] for plan in record["plans"]]
