"""AdamW's weight decay is applied as the reference framework (ADer's get_optim) applies it."""

from engine_tiny import make_tiny_data, tiny_config

from ssmad.engine.trainer import Trainer


def test_one_dimensional_parameters_and_biases_are_not_decayed(tmp_path):
    trainer = Trainer(tiny_config(make_tiny_data(tmp_path / "data"), tmp_path / "run"))
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in trainer.optimizer.param_groups}
    assert set(decay) == {0.0, trainer.weight_decay}
    skipped, decayed = decay[0.0], decay[trainer.weight_decay]
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert skipped | decayed == trainable and not skipped & decayed
    shapes = dict(trainer.model.named_parameters())
    assert skipped == {n for n in trainable if shapes[n].dim() == 1 or n.endswith(".bias")}
    assert any(n.endswith("A_logs") for n in decayed) and any(n.endswith(".Ds") for n in skipped)
    assert not any(hasattr(p, "_no_weight_decay") for p in trainer.model.parameters())
