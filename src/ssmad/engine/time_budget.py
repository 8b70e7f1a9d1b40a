"""``--time-budget``: how many optimiser steps fit in the wall time a user gives a training command.

The budget is the wall time from the command's start to a finished, calibrated run: start-up,
feature caching, kernel compilation (the first steps), training, the per-epoch validation and
the calibration. The :class:`BudgetPlanner` reads an injectable clock (``time.monotonic`` in
training, a fake one in tests) and:

1. leaves the first :data:`WARMUP_STEPS` step(s) of a process untimed (numba compiles the scan,
   the allocator warms up), then times :data:`MEASURED_STEPS` more;
2. plans the steps that fit in what is left of the budget: each step at the mean time of the
   latest steps, every epoch end at the measured cost of its validation (and checkpoint), and the
   calibration at the measured inference time per image x the number of calibration images, plus
   the last checkpoint write;
3. re-plans at the end of every epoch, with the latest step times (machine speed drifts 10-20 %).

When an epoch costs at most :data:`TOLERANCE` of the budget, the plan is rounded to whole epochs
(so ``--epochs E`` reproduces the run); otherwise it ends mid-epoch. A schedule that decays the
learning rate (``mambaad``: x0.1 from 80 % of the planned steps) counts the planned steps; once a
decayed step has run, the plan is kept (so the decay stays at 80 % of the run), and only cut when
keeping it would overrun the budget by more than :data:`TOLERANCE`.

A budget with no room for one epoch still trains at least the measured steps and calibrates,
and the plan says so (:attr:`Plan.warning`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

WARMUP_STEPS = 1  # untimed steps at the start of every process (compilation, warm-up)
MEASURED_STEPS = 2  # timed steps before the first plan
TOLERANCE = 0.05  # the run should end within this fraction of the budget
STEP_WINDOW = 50  # at most this many of the latest step times make the estimate

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str) -> float:
    """``"20m"``, ``"1h30m"``, ``"90s"``, ``"1.5h"`` -> seconds; a bad or zero duration is a ValueError."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"--time-budget {text!r} is not a duration: write e.g. 20m, 1h30m or 90s")
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"--time-budget {text!r} is zero: give a positive duration, e.g. 20m")
    return total


def format_duration(seconds: float) -> str:
    """Seconds -> the shortest of ``"1h30m"``, ``"20m"``, ``"90s"`` style (whole seconds)."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if value]
    return "".join(parts) or "0s"


@dataclass
class Plan:
    """One plan: train to ``total_steps``; made at ``at_step`` (seconds are since the command began)."""

    total_steps: int
    at_step: int
    made_at_seconds: float
    step_seconds: float
    predicted_end_seconds: float
    reason: str
    warning: str | None = None

    def describe(self, budget_seconds: float, steps_per_epoch: int) -> str:
        """One train.log line."""
        epochs = self.total_steps / steps_per_epoch
        return (
            f"time budget {format_duration(budget_seconds)}, {self.reason} at step {self.at_step} "
            f"({self.made_at_seconds:.1f} s spent): {self.total_steps} steps ({epochs:.2f} epochs of {steps_per_epoch}) "
            f"at {self.step_seconds:.3g} s/step, predicted end {self.predicted_end_seconds:.0f} s "
            f"({100 * self.predicted_end_seconds / budget_seconds:.0f} % of the budget)"
        )


def steps_that_fit(seconds: float, step_seconds: float, epoch_end_seconds: float, left_in_epoch: int, steps_per_epoch: int) -> int:
    """How many steps fit in ``seconds`` from a position with ``left_in_epoch`` steps before the
    epoch ends; every epoch end that another step follows costs ``epoch_end_seconds``."""
    count, block = 0, left_in_epoch
    while True:
        fitting = min(block, max(int(seconds // step_seconds), 0))
        count += fitting
        seconds -= fitting * step_seconds
        if fitting < block or seconds - epoch_end_seconds < step_seconds:
            return count
        seconds -= epoch_end_seconds
        block = steps_per_epoch


class BudgetPlanner:
    """Plans optimiser steps for a wall-time budget (see the module docstring).

    budget_seconds: the whole budget; spent_seconds: what earlier processes of this run used
    (``--resume``); steps_per_epoch: optimiser steps of one epoch; calibration_images: images
    the calibration scores; decay_at: the schedule's decay point (a fraction of the steps) or None;
    clock: seconds, monotonic; started: the clock's reading when the command began (default: now); record: a :meth:`record` of an earlier process of the run, whose
    plan is kept until this process has measured its own step time.
    """

    def __init__(
        self,
        budget_seconds: float,
        steps_per_epoch: int,
        calibration_images: int,
        decay_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        started: float | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        self.clock = clock
        self.started = clock() if started is None else started
        self.budget_seconds = budget_seconds
        self.steps_per_epoch = steps_per_epoch
        self.calibration_images = calibration_images
        self.decay_at = decay_at
        self.spent_before = float(record["spent_seconds"]) if record else 0.0
        self.plans = [Plan(**plan) for plan in record["plans"]] if record else []
        self.step_times: list[float] = []
        self.steps_seen = 0
        self.epoch_end_times: list[float] = []
        self.inference_seconds_per_image: float | None = None
        self.save_seconds = 0.0
        self._step_started: float | None = None
        self._planned_in_process = False

    # ------------------------------------------------------------------ measurements
    def elapsed(self) -> float:
        """Seconds of the budget used so far, earlier processes of the run included."""
        return self.spent_before + self.clock() - self.started

    def step_begins(self) -> None:
        self._step_started = self.clock()

    def step_ends(self) -> None:
        """Time the step :meth:`step_begins` started (the warm-up steps are not kept)."""
        self.steps_seen += 1
        if self.steps_seen > WARMUP_STEPS:
            self.step_times.append(self.clock() - self._step_started)

    def record_epoch_end(self, seconds: float) -> None:
        """The cost of one epoch end (validation, log, checkpoint)."""
        self.epoch_end_times.append(seconds)

    def record_inference(self, seconds: float, images: int) -> None:
        """A validation pass of ``images`` images took ``seconds``: the inference time per image."""
        self.inference_seconds_per_image = seconds / max(images, 1)

    def record_save(self, seconds: float) -> None:
        """A checkpoint write took ``seconds`` (the last write of the run is planned at this cost)."""
        self.save_seconds = seconds

    @property
    def measured(self) -> bool:
        """Whether this process has timed enough steps to plan."""
        return len(self.step_times) >= MEASURED_STEPS

    @property
    def due(self) -> bool:
        """Whether this process has just measured enough steps and not planned yet."""
        return self.measured and not self._planned_in_process

    @property
    def plan(self) -> Plan | None:
        """The current plan (None before the first)."""
        return self.plans[-1] if self.plans else None

    def calibration_seconds(self) -> float:
        """Estimated cost of the calibration: inference time per image x calibration images."""
        return (self.inference_seconds_per_image or 0.0) * self.calibration_images

    # ------------------------------------------------------------------ planning
    def replan(self, global_step: int, step_in_epoch: int, reason: str) -> Plan:
        """Plan (again) from position ``global_step`` (``step_in_epoch`` into its epoch); needs :attr:`measured`."""
        step = sum(self.step_times[-STEP_WINDOW:]) / len(self.step_times[-STEP_WINDOW:])
        epoch_end = sum(self.epoch_end_times) / len(self.epoch_end_times) if self.epoch_end_times else self.calibration_seconds()
        elapsed = self.elapsed()
        end_cost = self.calibration_seconds() + self.save_seconds
        left_in_epoch = self.steps_per_epoch - step_in_epoch
        fitting = steps_that_fit(self.budget_seconds - elapsed - end_cost, step, epoch_end, left_in_epoch, self.steps_per_epoch)
        total = global_step + fitting
        epoch_seconds = self.steps_per_epoch * step + epoch_end
        if epoch_seconds <= TOLERANCE * self.budget_seconds:
            total = max(round(total / self.steps_per_epoch) * self.steps_per_epoch, global_step)
        total = max(total, global_step)
        kept = self._decayed_plan(global_step)
        if kept is not None:
            if self._predicted_end(kept, global_step, step_in_epoch, step, epoch_end, end_cost) <= (1 + TOLERANCE) * self.budget_seconds:
                total, reason = kept, f"{reason} (plan kept: the lr decay has begun)"
            else:
                reason = f"{reason} (plan cut after the lr decay began: it would overrun the budget)"
        predicted = self._predicted_end(total, global_step, step_in_epoch, step, epoch_end, end_cost)
        warning = None
        if total < self.steps_per_epoch:
            one_epoch = self._predicted_end(self.steps_per_epoch, global_step, step_in_epoch, step, epoch_end, end_cost)
            warning = (
                f"the time budget {format_duration(self.budget_seconds)} is too short for one epoch "
                f"({self.steps_per_epoch} steps at {step:.3g} s each, after {elapsed:.0f} s of start-up, feature "
                f"caching and compilation, and {end_cost:.1f} s for the calibration): training {total} step(s), "
                f"then calibrating; give --time-budget {format_duration(math.ceil(one_epoch * 1.1))} or more for a full epoch"
            )
        elif fitting == 0 and predicted > (1 + TOLERANCE) * self.budget_seconds:
            warning = (
                f"the time budget {format_duration(self.budget_seconds)} is spent ({elapsed:.0f} s after start-up, "
                f"feature caching and {global_step} steps at {step:.3g} s each): training stops at step {total} and "
                "calibrates; give a longer --time-budget for more steps"
            )
        plan = Plan(total, global_step, elapsed, step, predicted, reason, warning)
        self.plans.append(plan)
        self._planned_in_process = True
        return plan

    def adopt(self, total_steps: int) -> None:
        """Take ``total_steps`` as the current plan's (the main process's plan, under DDP)."""
        self.plans[-1].total_steps = total_steps

    def _decayed_plan(self, global_step: int) -> int | None:
        """The current plan's total when a decayed step of it has run, else None."""
        current = self.plan
        if self.decay_at is None or current is None:
            return None
        return current.total_steps if global_step > int(self.decay_at * current.total_steps) else None

    def _predicted_end(self, total: int, global_step: int, step_in_epoch: int, step: float, epoch_end: float, end_cost: float) -> float:
        """Seconds since the command began at which training to ``total`` steps would be calibrated."""
        steps = total - global_step
        epoch_ends = max((step_in_epoch + steps - 1) // self.steps_per_epoch, 0)  # those another step follows
        return self.elapsed() + steps * step + epoch_ends * epoch_end + end_cost

    def planned_end_in(self) -> float:
        """Seconds from now to the current plan's predicted end (0 before the first plan)."""
        return max(self.plan.predicted_end_seconds - self.elapsed(), 0.0) if self.plan else 0.0

    def record(self, global_step: int, epoch: int) -> dict[str, Any]:
        """The checkpoint's ``budget`` entry: the budget, what is spent, the plans, the realised steps."""
        return {
            "seconds": self.budget_seconds,
            "spent_seconds": self.elapsed(),
            "planned_steps": self.plan.total_steps if self.plan else None,
            "steps": global_step,
            "epochs": epoch,
            "plans": [asdict(plan) for plan in self.plans],
        }


def check_budget_flags(time_budget: float | None, epochs: int | None, max_steps: int | None) -> None:
    """Refuse ``--epochs`` or ``--max-steps`` beside ``--time-budget``: the budget plans the steps."""
    if time_budget is None:
        return
    given = [flag for flag, value in (("--epochs", epochs), ("--max-steps", max_steps)) if value is not None]
    if given:
        raise ValueError(
            f"--time-budget plans the number of steps itself: leave out {' and '.join(given)} "
            "(a finished budget run's train.log names the --epochs that reproduce it)"
        )
