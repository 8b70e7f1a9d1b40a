"""Writes the fixtures of tests/test_engine_checkpoint_schema.py for the running ssmad's checkpoint
schema S and export metadata layout L (vS_run_checkpoint.pt.xz, vL_export_metadata.json,
vS_expected_scores.json; run it with the ssmad version to freeze, before a schema change): the
model and run of ``make_v1_fixture.py`` (same two-valued
shrunken Pyramid-Mamba, same synthetic normals), written by that version's run writer and exporter,
and the scores, decisions and thresholds it gives.

    PYTHONPATH=<ssmad src>:tests/data python tests/data/make_run_fixture.py OUT_FOLDER
"""

import json
import lzma
import sys
import tempfile
from pathlib import Path

import torch
from make_v1_fixture import SETTINGS, two_valued

import ssmad
from ssmad.data import make_synthetic
from ssmad.engine.checkpoint import SCHEMA_VERSION
from ssmad.export import export_onnx, read_onnx_metadata
from ssmad.export.metadata import FORMAT
from ssmad.models import build_model
from ssmad.official import write_run


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model("pyramid_mamba", **{k: v for k, v in SETTINGS.items() if k != "image_size"})
    two_valued(model)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic(Path(tmp) / "data", classes=["wood", "nut"], num_train=6, num_test=2, image_size=64, seed=0)
        source = Path(tmp) / "official.pth"
        torch.save({"net": {}}, source)
        run = Path(tmp) / "run"
        checkpoint, _ = write_run(model, run, data, "pyramid_mamba", source, dataset="mvtec", val_fraction=0.2,
                                  device="cpu", batch_size=4, image_size="64")
        onnx_path = export_onnx(run, Path(tmp) / "model.onnx")
        detector = ssmad.load(run, "cpu")
        torch.manual_seed(0)
        images = torch.randn(3, 3, 64, 64)
        result = detector.predict(images, class_name="wood")
        expected = {"ssmad_version": ssmad.__version__, "class_name": "wood", "images": "torch.manual_seed(0); torch.randn(3, 3, 64, 64)",
                    "scores": [float(s) for s in result.scores], "decisions": [bool(d) for d in result.decisions],
                    "thresholds": [float(t) for t in result.thresholds]}
        (out / f"v{SCHEMA_VERSION}_expected_scores.json").write_text(json.dumps(expected, indent=2) + "\n")
        (out / f"v{FORMAT}_export_metadata.json").write_text(json.dumps(read_onnx_metadata(onnx_path), indent=2) + "\n")
        (out / f"v{SCHEMA_VERSION}_run_checkpoint.pt.xz").write_bytes(lzma.compress(checkpoint.read_bytes(), preset=9 | lzma.PRESET_EXTREME))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
