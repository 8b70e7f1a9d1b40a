"""Fault: --cache disk reused when it matches, rebuilt (saying why) when truncated or from other inputs."""

import os

import pytest
import torch
from engine_tiny import make_tiny_data, tiny_config

from ssmad.engine.checkpoint import load_checkpoint
from ssmad.engine.trainer import Trainer, resume_config
from ssmad.modules.encoder_base import FeatureEncoder


@pytest.fixture
def encoder_calls(monkeypatch):
    """Images the (frozen) encoder has been run on."""
    calls = []
    forward = FeatureEncoder.forward

    def counting(self, images):
        calls.append(len(images))
        return forward(self, images)

    monkeypatch.setattr(FeatureEncoder, "forward", counting)
    return calls


def _origins(run) -> str:
    return [line for line in (run / "train.log").read_text().splitlines() if "features of" in line][-1]


@pytest.mark.slow
def test_disk_cache_is_reused_by_resume_and_by_a_rerun(tmp_path, encoder_calls):
    data = make_tiny_data(tmp_path / "data")
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    Trainer(tiny_config(data, run, cache="disk", cache_dir=str(cache), max_steps=1)).fit()
    assert sum(encoder_calls) == 12 and "computed in" in _origins(run)
    encoder_calls.clear()
    assert Trainer(resume_config(run, max_steps=None), resume=True).fit().finished
    assert "train reused from" in _origins(run) and "val reused from" in _origins(run)
    assert sum(encoder_calls) == 0
    rerun = tmp_path / "rerun"
    Trainer(tiny_config(data, rerun, cache="disk", cache_dir=str(cache))).fit()
    assert sum(encoder_calls) == 0 and "reused from" in _origins(rerun)
    reference = Trainer(tiny_config(data, tmp_path / "memory", cache="memory")).fit()
    assert reference.finished
    for key, value in load_checkpoint(tmp_path / "memory")["trainable_state"].items():
        assert torch.equal(value, load_checkpoint(rerun)["trainable_state"][key]), key


@pytest.mark.slow
def test_truncated_or_foreign_disk_caches_are_rebuilt(tmp_path, encoder_calls):
    data = make_tiny_data(tmp_path / "data")
    cache = tmp_path / "cache"
    Trainer(tiny_config(data, tmp_path / "r0", cache="disk", cache_dir=str(cache), max_steps=1)).fit()
    feature_file = cache / "rank0" / "train" / "scale1.npy"
    os.truncate(feature_file, feature_file.stat().st_size // 2)
    Trainer(tiny_config(data, tmp_path / "r1", cache="disk", cache_dir=str(cache), max_steps=1)).fit()
    assert "train rebuilt" in _origins(tmp_path / "r1") and "truncated" in _origins(tmp_path / "r1")
    Trainer(tiny_config(data, tmp_path / "r2", cache="disk", cache_dir=str(cache), max_steps=1, seed=5)).fit()
    assert "another encoder" in _origins(tmp_path / "r2")  # seed 5: another random encoder
    added = data / "wood" / "train" / "good" / "999.png"
    added.write_bytes((data / "wood" / "train" / "good" / "000.png").read_bytes())
    Trainer(tiny_config(data, tmp_path / "r3", cache="disk", cache_dir=str(cache), max_steps=1, seed=5)).fit()
    assert "999.png is new" in _origins(tmp_path / "r3")
