"""--resume rebuilds the encoder from the checkpoint, wherever the run folder and weights file now are."""

import shutil

import pytest
import torch
from engine_tiny import make_tiny_data, tiny_config

from ssmad.engine.checkpoint import load_checkpoint
from ssmad.engine.trainer import Trainer, resume_config
from ssmad.modules.encoder import build_encoder


@pytest.mark.slow
def test_resume_uses_the_stored_encoder_after_run_and_weights_moved(tmp_path):
    data = make_tiny_data(tmp_path / "data")
    weights = tmp_path / "weights" / "resnet18-mine.pth"
    weights.parent.mkdir()
    torch.manual_seed(1)
    torch.save(build_encoder("resnet18", "random").state_dict(), weights)
    run = tmp_path / "run"
    stopped = Trainer(tiny_config(data, run, weights=str(weights), max_steps=2)).fit()
    assert not stopped.finished
    stored = load_checkpoint(run)["encoder_state"]
    torch.manual_seed(2)
    torch.save(build_encoder("resnet18", "random").state_dict(), weights)  # another file at the recorded path
    moved = tmp_path / "moved_run"
    shutil.move(run, moved)
    partly = Trainer(resume_config(moved, max_steps=3), resume=True).fit()
    assert not partly.finished and partly.global_step == 3
    weights.unlink()  # and the recorded file gone altogether
    assert Trainer(resume_config(moved, max_steps=None), resume=True).fit().finished
    final = load_checkpoint(moved)
    assert all(torch.equal(final["encoder_state"][key], value) for key, value in stored.items())
