"""The learning-rate schedule follows the optimiser steps the user asked for, not the preset's epochs."""

import pytest
from engine_tiny import make_tiny_data, tiny_config

from ssmad.models import get_preset
from ssmad.engine.trainer import Trainer


def test_step_decay_starts_after_80_percent_of_the_steps():
    recipe = get_preset("mambaad").recipe
    rates = [recipe.lr_at(1.0, step, 10) for step in range(10)]
    assert rates == [1.0] * 8 + [pytest.approx(0.1)] * 2
    assert get_preset("pyramid_mamba").recipe.lr_at(1.0, 9, 10) == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("epochs", [1, 2])
def test_short_mambaad_run_trains_at_the_full_rate_first(tmp_path, epochs):
    data = make_tiny_data(tmp_path / "data")
    trainer = Trainer(tiny_config(data, tmp_path / "run", preset="mambaad", epochs=epochs))
    step = trainer.optimizer.step
    rates = []

    def recording_step(*args, **kwargs):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    assert trainer.fit().finished
    total = len(rates)
    full = int(0.8 * total)
    assert rates[:full] == [trainer.lr] * full
    assert rates[full:] == [pytest.approx(0.1 * trainer.lr)] * (total - full)
    assert f"lr schedule: {trainer.lr:.2e} for steps 1-{full}" in (tmp_path / "run" / "train.log").read_text()
