"""Training for a time budget and the signals a run leaves, on tiny synthetic data: a budget too
short for one epoch (fake clock), ``--resume`` keeping the plan, the refusals, metrics.jsonl,
train_curves.png and TensorBoard's event file (real clock, the command line)."""

import json
import os
import signal
import sys

import numpy as np
import pytest
from engine_tiny import TINY_MODEL, make_tiny_data, tiny_cli_args, tiny_config

import ssmad
from ssmad.cli import main
from ssmad.engine.checkpoint import load_checkpoint
from ssmad.engine.trainer import Trainer, resume_config
from ssmad.engine.training_metrics import read_metrics


class StepClock:
    """A clock that moves by one second for every optimiser step and stands still otherwise."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def tick_on_steps(self, trainer: Trainer, interrupt_at: int | None = None) -> None:
        step = trainer.optimizer.step
        calls = []

        def timed_step(*args, **kwargs):
            self.now += 1.0
            calls.append(1)
            if len(calls) == interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)  # taken after this step
            return step(*args, **kwargs)

        trainer.optimizer.step = timed_step


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("data"))


def budget_trainer(data, out, budget, clock, **changes):
    """10 training images in batches of 2: 5 steps an epoch."""
    config = tiny_config(data, out, epochs=None, batch_size=2, time_budget=budget, **changes)
    return Trainer(config, clock=clock)


@pytest.mark.slow
def test_a_budget_too_short_for_one_epoch_says_so_and_still_calibrates(tiny_data, tmp_path):
    clock = StepClock()
    trainer = budget_trainer(tiny_data, tmp_path, 2.0, clock)
    clock.tick_on_steps(trainer)
    result = trainer.fit()
    assert result.finished and result.global_step == 3  # the warm-up step and the two timed ones
    log = (tmp_path / "train.log").read_text()
    assert "the time budget 2s is too short for one epoch (5 steps at 1 s each" in log
    assert "give --time-budget 6s or more for a full epoch" in log  # 3 s spent + the epoch's 2 other steps, + 10 %, up
    payload = load_checkpoint(tmp_path)
    assert payload["progress"]["finished"] and set(payload["calibration"]["classes"]) == {"nut", "wood"}
    assert payload["budget"]["steps"] == 3 and payload["budget"]["epochs"] == 1 and payload["budget"]["seconds"] == 2.0
    detector = ssmad.load(tmp_path, "cpu")
    assert detector.predict(str(next((tiny_data / "wood" / "test" / "good").iterdir()))).scores[0] > 0


@pytest.mark.slow
def test_resume_keeps_the_plan_and_the_budget_spent(tiny_data, tmp_path):
    clock = StepClock()
    trainer = budget_trainer(tiny_data, tmp_path, 7.0, clock)
    clock.tick_on_steps(trainer, interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    stopped = load_checkpoint(tmp_path)["budget"]
    # 7 s: 3 timed steps, then 4 more fit (the validation and checkpoint take no time on this clock)
    assert stopped["planned_steps"] == 7 and stopped["steps"] == 4 and stopped["spent_seconds"] == 4.0

    clock = StepClock()
    resumed = Trainer(resume_config(tmp_path), resume=True, clock=clock)
    clock.tick_on_steps(resumed)
    result = resumed.fit()
    assert result.finished and result.global_step == 7
    log = (tmp_path / "train.log").read_text()
    assert "resumed with 4s of the time budget spent; plan kept until this process has timed its steps: time budget 7s" in log
    finished = load_checkpoint(tmp_path)["budget"]
    assert finished["plans"][: len(stopped["plans"])] == stopped["plans"]
    assert finished["steps"] == 7 and finished["spent_seconds"] == 7.0
    steps = [record["step"] for record in read_metrics(tmp_path / "metrics.jsonl") if record["kind"] == "step"]
    assert steps == list(range(1, 8))  # the interrupted process's lines, then the resumed one's, none twice


@pytest.mark.parametrize("flag", [["--epochs", "2"], ["--max-steps", "5"]])
def test_epochs_or_max_steps_beside_a_budget_are_refused(tiny_data, tmp_path, capsys, flag):
    assert main([*tiny_cli_args(tiny_data, tmp_path / "run"), "--time-budget", "10m", *flag]) == 2
    assert f"--time-budget plans the number of steps itself: leave out {flag[0]}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_val_data_that_is_the_training_root_is_refused(tiny_data, tmp_path, capsys):
    assert main([*tiny_cli_args(tiny_data, tmp_path / "run"), "--epochs", "1", "--val-data", str(tiny_data)]) == 2
    assert "whose test split is the test set" in capsys.readouterr().err


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def budget_run(tiny_data, tmp_path_factory):
    """``ssmad train --time-budget 1s`` (real clock) with a labelled validation copy, and TensorBoard
    when its extra is installed."""
    import shutil

    root = tmp_path_factory.mktemp("budget_run")
    val_data = root / "val_copy"
    shutil.copytree(tiny_data, val_data)
    run = root / "run"
    args = [*tiny_cli_args(tiny_data, run), "--batch-size", "2", "--time-budget", "1s", "--val-data", str(val_data)]
    assert main([*args, *(["--log", "tensorboard"] if tensorboard_available() else [])]) == 0
    return run


@pytest.mark.slow
def test_a_pyramid_mamba_budget_trains_with_the_cosine_loss_and_says_so(budget_run):
    assert load_checkpoint(budget_run)["model_config"]["loss"] == "cosine"
    assert "recipe: the pyramid_mamba preset's with the cosine loss" in (budget_run / "train.log").read_text()


def test_set_overrides_the_budget_recipes_loss_and_train_log_says_so(tiny_data, tmp_path):
    trainer = budget_trainer(tiny_data, tmp_path, 60.0, StepClock(), model_overrides={**TINY_MODEL, "loss": "mse"})
    assert trainer.model.config.loss == "mse"
    assert trainer.recipe_name.endswith("cosine loss (best measured for short budgets), with loss=mse from --set")
    assert budget_trainer(tiny_data, tmp_path / "plain", 60.0, StepClock()).model.config.loss == "cosine"


@pytest.mark.slow
def test_metrics_jsonl_holds_every_step_and_each_epochs_validation(budget_run, tiny_data):
    records = read_metrics(budget_run / "metrics.jsonl")
    payload = load_checkpoint(budget_run)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(1, payload["progress"]["global_step"] + 1))
    # the real clock decides how many steps fit: step 0's validation, then one after each epoch of 5 steps
    last_step, epoch_losses = payload["progress"]["global_step"], payload["progress"]["epoch_losses"]
    assert [r["step"] for r in epochs] == [0, *(min(5 * e, last_step) for e in range(1, len(epoch_losses) + 1))]
    assert np.mean([r["loss"] for r in steps[:5]]) == pytest.approx(epoch_losses[0])
    # the last validation is the calibration's: its normals' scores, scored again by the finished model
    detector = ssmad.load(budget_run, "cpu")
    val = ssmad.data.build_dataset("mvtec", tiny_data, "val", image_size=64).samples
    scores = detector.predict([str(s.path) for s in val]).scores
    assert epochs[-1]["val_score_mean"] == pytest.approx(np.mean(scores), rel=1e-4)
    assert epochs[-1]["val_score_p99"] == pytest.approx(np.percentile(scores, 99), rel=1e-4)
    assert 0.0 <= epochs[-1]["val_image_auroc"] <= 1.0 and 0.0 <= epochs[-1]["val_pixel_ap"] <= 1.0
    assert all(json.dumps(r) for r in records)


@pytest.mark.slow
def test_train_curves_png_is_drawn(budget_run):
    from PIL import Image

    with Image.open(budget_run / "train_curves.png") as image:
        assert image.width > 500 and image.height > 500


@pytest.mark.slow
def test_tensorboard_event_file_holds_the_step_losses_and_heatmaps(budget_run):
    if not tensorboard_available():
        pytest.skip("the tensorboard extra is not installed (pip install 'ssmad[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(budget_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    losses = [r["loss"] for r in read_metrics(budget_run / "metrics.jsonl") if r["kind"] == "step"]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)
    assert {"val/val_score_mean", "val/val_loss", "val/val_image_auroc"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Images("val_heatmap/0")] == [0]  # step 0; the next at epoch 5


def test_log_tensorboard_without_its_extra_names_the_extra(monkeypatch):
    from ssmad.engine.tensorboard_log import require_tensorboard

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"--log tensorboard needs the tensorboard package: pip install 'ssmad\[tensorboard\]'"):
        require_tensorboard()
