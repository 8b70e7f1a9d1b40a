"""Drop-path rates of the decoder blocks: ssmad's per-block line and the official code's rule."""

import pytest
import torch

from ssmad.modules.decoder import MambaDecoder


def block_rates(decoder: MambaDecoder) -> list[float]:
    return [block.drop_path.rate for stage in decoder.stages for module in stage.lss_modules for block in module.blocks]


def official_rates(depths: list[int], rate: float) -> list[float]:
    """The official MambaUPNet: dpr = linspace(0, rate, sum)[::-1]; VSSLayer_up gives module i of a
    stage (modules of 3 blocks, else of 2) the stage's dpr[i] for all its blocks."""
    dpr = [x.item() for x in torch.linspace(0, rate, sum(depths))][::-1]
    rates = []
    for i, depth in enumerate(depths):
        stage = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
        size = 3 if depth % 3 == 0 else 2
        rates += [stage[m] for m in range(depth // size) for _ in range(size)]
    return rates


@pytest.mark.parametrize("rule", ["per_block", "official"])
def test_block_rates_follow_the_rule(rule):
    decoder = MambaDecoder(dims=(32, 16, 16, 16), depths=(3, 4, 6, 3), drop_path_rate=0.2, drop_path_rule=rule)
    expected = official_rates([3, 4, 6, 3], 0.2) if rule == "official" else [0.2 * (15 - i) / 15 for i in range(16)]
    assert block_rates(decoder) == pytest.approx(expected, abs=1e-7)
