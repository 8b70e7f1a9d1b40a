"""ssmad.official: checkpoints trained with the official MambaAD / Pyramid-Mamba code, in ssmad.

    model = ssmad.convert("official.pth", preset="pyramid_mamba")     # an AnomalyModel
    write_run(model, "RUN", data="mvtec_ad", preset="pyramid_mamba")  # a run test/predict accept

Next to ``ssmad.engine``: it imports the engine, the engine never imports it.
"""

from ssmad.official.convert import OFFICIAL_ENCODER, convert
from ssmad.official.run import write_run
from ssmad.official.state_dict import OfficialCheckpointError, convert_state_dict, read_official_checkpoint

__all__ = [
    "OFFICIAL_ENCODER",
    "OfficialCheckpointError",
    "convert",
    "convert_state_dict",
    "read_official_checkpoint",
    "write_run",
]
