"""ModelConfig, presets, build_model and the model's API contract (parameter counts, errors)."""

import pytest
import torch

from ssmad.models import PRESETS, AnomalyModel, ModelConfig, build_model


def test_parameter_counts_match_official_resnet34():
    # Counts of the official MambaAD / Pyramid-Mamba code (DESIGN.md section 4).
    targets = {"mambaad": 15.99e6, "pyramid_mamba": 13.42e6}
    for name, decoder_target in targets.items():
        counts = build_model(name, encoder_weights="random").parameter_counts()
        assert abs(counts["decoder"] - decoder_target) <= 0.005 * decoder_target, (name, counts)
        assert abs(counts["bottleneck"] - 1.46e6) <= 0.005 * 1.46e6
        assert abs(counts["encoder"] - 8.17e6) <= 0.005 * 8.17e6
    # Exact totals of the analytic count (see the report): K=8 and K=4 decoders.
    assert build_model("mambaad", encoder_weights="random").parameter_counts()["decoder"] == 15_986_624


def test_presets_hold_the_papers_settings():
    mambaad, pyramid = PRESETS["mambaad"].model, PRESETS["pyramid_mamba"].model
    assert (mambaad.encoder, mambaad.scan_order, mambaad.num_directions) == ("resnet34", "hilbert", 8)
    assert (mambaad.pyramid_levels, mambaad.noise_std) == (0, 0.0)
    assert (pyramid.encoder, pyramid.scan_order, pyramid.num_directions) == ("resnet34", "sweep", 4)
    assert (pyramid.pyramid_levels, pyramid.pyramid_merge, pyramid.noise_std) == (2, "mean", 0.05)
    assert pyramid.decoder_depths == (3, 4, 6, 3) and pyramid.blur_sigma == 4.0


def test_config_round_trips_through_a_plain_dict():
    config = PRESETS["mambaad"].model.replace(decoder_depths=[1, 2, 3, 3], blur_sigma=2.0)
    values = config.to_dict()
    assert values["decoder_depths"] == [1, 2, 3, 3]  # JSON-safe lists
    assert ModelConfig.from_dict(values) == config


def test_unknown_override_lists_the_valid_fields():
    with pytest.raises(ValueError, match="pyramid_level.*valid fields: encoder, encoder_weights"):
        build_model("pyramid_mamba", pyramid_level=1)
    with pytest.raises(ValueError, match="unknown model preset 'mamba'"):
        build_model("mamba")


@pytest.mark.parametrize(
    "override",
    [{"num_directions": 3}, {"scan_order": "spiral"}, {"pyramid_merge": "max"}, {"map_scale": "mean"}, {"drop_path_rule": "linear"}],
)
def test_invalid_values_are_named(override):
    (name, value), = override.items()
    with pytest.raises(ValueError, match=f"ModelConfig.{name} = {value!r}"):
        ModelConfig(**override)


def tiny_model(**overrides) -> AnomalyModel:
    settings = dict(encoder="mobilenet_v2", encoder_weights="random", decoder_depths=(1, 1, 1, 1))
    return build_model("pyramid_mamba", **{**settings, **overrides})


def test_input_size_must_be_a_multiple_of_32():
    model = tiny_model().eval()
    with pytest.raises(ValueError, match="72x64 is not a multiple of 32"):
        model.anomaly_map(torch.zeros(1, 3, 72, 64))


def test_trainable_state_dict_round_trip_and_mismatch():
    torch.manual_seed(0)
    source, target = tiny_model(), tiny_model()
    state = source.trainable_state_dict()
    assert state and all(k.startswith(("bottleneck.", "decoder.")) for k in state)
    target.load_trainable_state_dict(state)
    for key, value in target.trainable_state_dict().items():
        assert torch.equal(value, state[key])
    other = tiny_model(num_directions=8)
    with pytest.raises(ValueError, match="mis-shaped.*x_proj_weight"):
        other.load_trainable_state_dict(state)


def test_encoder_stays_frozen_in_training_mode():
    model = tiny_model().train()
    assert not model.encoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert model.decoder.training and model.bottleneck.training
