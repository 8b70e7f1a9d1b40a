"""Every scan-order family and both presets export: onnxruntime against PyTorch for SS2D layers
(raster and Hilbert orders, K = 2/4/8, P = 0/1/2, a map side the block does not divide) and for
whole untrained models of each preset."""

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from ssmad.export.graph import ExportGraph, to_onnx  # noqa: E402
from ssmad.export.metadata import OUTPUT_NAMES  # noqa: E402
from ssmad.models import build_model  # noqa: E402
from ssmad.modules.ss2d import SS2D  # noqa: E402


def run_onnx(model, *inputs):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: x.numpy() for name, x in zip(names, inputs)})


def relative(actual, expected):
    expected = expected.detach().double().numpy()
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("order,directions,levels", [
    ("sweep", 4, 2), ("sweep", 2, 1), ("sweep", 8, 0), ("hilbert", 8, 0), ("hilbert", 4, 1), ("hilbert", 2, 2),
])
def test_ss2d_layer_exports_with_its_routes(order, directions, levels):
    torch.manual_seed(0)
    layer = SS2D(8, scan_order=order, num_directions=directions, pyramid_levels=levels, d_state=4).eval()
    x = torch.randn(2, 7, 6, 8)  # L = 42: padded to whole blocks
    model = to_onnx(layer, x, ["x"], ["y"])
    assert "RoutedScan" in [node.op_type for node in model.graph.node]
    assert "Scan" in [node.op_type for node in model.functions[0].node]
    with torch.no_grad():
        expected = layer(x)
        other_batch = torch.randn(3, 7, 6, 8)
        expected_other = layer(other_batch)
    assert relative(run_onnx(model, x)[0], expected) <= 1e-5
    assert relative(run_onnx(model, other_batch)[0], expected_other) <= 1e-5


@pytest.mark.parametrize("preset", ["pyramid_mamba", "mambaad"])
def test_each_preset_exports(preset):
    torch.manual_seed(0)
    model = build_model(preset, encoder="resnet18", encoder_weights="random", decoder_depths=(1, 1, 1, 1))
    graph = ExportGraph(model.eval())
    images = torch.rand(2, 3, 64, 64)
    maps, scores, _ = run_onnx(to_onnx(graph, images, ["image"], list(OUTPUT_NAMES)), images)
    expected_maps, expected_scores, _ = graph(images)
    assert relative(maps, expected_maps) <= 1e-5 and relative(scores, expected_scores) <= 1e-5
