"""Writes the schema-1 fixtures of tests/test_engine_checkpoint_schema.py (run with the ssmad to freeze).

A finished run written by ssmad's own run writer (``ssmad.official.write_run``: calibrated on
synthetic normals, the layout ``ssmad train`` finishes with, less the optimiser state a trained
run of schema 1 carried), its ONNX export, the export's metadata JSON, and the scores of seeded
tensors. The model is shrunken Pyramid-Mamba on a random MobileNetV2 whose weights are made
two-valued per tensor (mean +- std of the initialisation), so that the files compress to a few
hundred KB (``.xz``); the network still computes ordinary, image-dependent scores.

    PYTHONPATH=<ssmad src> python tests/data/make_v1_fixture.py OUT_FOLDER
"""

import json
import lzma
import shutil
import sys
import tempfile
from pathlib import Path

import torch

import ssmad
from ssmad.data import make_synthetic
from ssmad.export import export_onnx, read_onnx_metadata
from ssmad.models import build_model
from ssmad.official import write_run

SETTINGS = dict(encoder="mobilenet_v2", encoder_weights="random", image_size=64, decoder_depths=[1, 1, 1, 1],
                pyramid_levels=1, d_state=1, ssm_ratio=0.5, lec_kernel_sizes=[3])


def two_valued(model: torch.nn.Module) -> None:
    """Every non-constant float tensor -> mean +- std, the sign drawn from a seeded generator."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point() and tensor.numel() > 1 and tensor.std() > 0:
                signs = torch.randint(0, 2, tensor.shape, generator=generator).float() * 2 - 1
                tensor.copy_(tensor.mean() + tensor.std() * signs)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model("pyramid_mamba", **SETTINGS)
    two_valued(model)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic(Path(tmp) / "data", classes=["wood", "nut"], num_train=6, num_test=2, image_size=64, seed=0)
        source = Path(tmp) / "official.pth"
        torch.save({"net": {}}, source)  # the run records the file it was converted from
        run = Path(tmp) / "run"
        checkpoint, _ = write_run(model, run, data, "pyramid_mamba", source, dataset="mvtec", val_fraction=0.2,
                                  device="cpu", batch_size=4)
        onnx_path = export_onnx(run, Path(tmp) / "model.onnx")
        detector = ssmad.load(run, "cpu")
        torch.manual_seed(0)
        images = torch.randn(3, 3, 64, 64)
        result = detector.predict(images, class_name="wood")
        expected = {"ssmad_version": ssmad.__version__, "class_name": "wood", "images": "torch.manual_seed(0); torch.randn(3, 3, 64, 64)",
                    "scores": [float(s) for s in result.scores], "decisions": [bool(d) for d in result.decisions]}
        (out / "v1_expected_scores.json").write_text(json.dumps(expected, indent=2) + "\n")
        (out / "v1_export_metadata.json").write_text(json.dumps(read_onnx_metadata(onnx_path), indent=2) + "\n")
        for path, name in ((checkpoint, "v1_run_checkpoint.pt.xz"), (onnx_path, "v1_model.onnx.xz")):
            (out / name).write_bytes(lzma.compress(path.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
        shutil.rmtree(run)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
