"""The exported scan node ``ssmad::RoutedScan`` against the sequential reference
(``ssmad.ops.reference.routed_scan_ref``): its ONNX function in onnxruntime, and ssmad's fused
OpenVINO operator (skipped, saying why, where the extension cannot be built: no compiler, not Linux).
Random shapes: raster and Hilbert orders, K = 2/4/8, pyramid levels 0-2, channels and states that
are and are not multiples of 16."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from ssmad.export.graph import DEFAULT_OPSET  # noqa: E402
from ssmad.export.scan_function import INPUTS, routed_scan_function  # noqa: E402
from ssmad.export.signal_stack import kept_signal_stack  # noqa: E402
from ssmad.ops.reference import routed_scan_ref  # noqa: E402
from ssmad.ops.routes import pyramid_routes  # noqa: E402
from ssmad.ops.scan_torch import SCAN_DOMAIN, SCAN_OP  # noqa: E402

CASES = [  # order, K, P, batch, H, W, D, N
    ("sweep", 2, 0, 1, 5, 7, 16, 16),
    ("sweep", 4, 1, 2, 6, 6, 21, 4),
    ("sweep", 8, 2, 1, 9, 8, 40, 20),
    ("hilbert", 2, 2, 2, 8, 5, 5, 16),
    ("hilbert", 4, 0, 1, 7, 9, 48, 8),
    ("hilbert", 8, 1, 2, 6, 7, 16, 16),
]


def node_model():
    """A model of one ``ssmad.RoutedScan`` node, its inputs the graph's, its function beside it."""
    helper, TP = onnx.helper, onnx.TensorProto
    ranks = dict(u=3, delta=4, A=3, B=4, C=4, Dskip=2, bias=2, index=3, keep=3, weight=2)
    graph = helper.make_graph(
        [helper.make_node(SCAN_OP, list(INPUTS), ["y"], domain=SCAN_DOMAIN)], "routed_scan",
        [helper.make_tensor_value_info(name, TP.INT64 if name == "index" else TP.FLOAT, [None] * ranks[name])
         for name in INPUTS],
        [helper.make_tensor_value_info("y", TP.FLOAT, [None] * 3)],
    )
    model = helper.make_model(graph, functions=[routed_scan_function(DEFAULT_OPSET)], opset_imports=[
        helper.make_opsetid("", DEFAULT_OPSET), helper.make_opsetid(SCAN_DOMAIN, 1)])
    onnx.checker.check_model(model)
    return model


def case(order, K, P, batch, H, W, D, N, seed=0):
    """(the node's inputs as arrays, the reference output (b, L, D) in float64)."""
    generator = torch.Generator().manual_seed(seed)
    L = H * W
    routes = pyramid_routes(order, H, W, K, P, "nested")
    u = torch.randn(batch, L, D, generator=generator)
    delta = torch.randn(batch, K, L, D, generator=generator) - 1
    A = -torch.rand(K, D, N, generator=generator) * 4 - 0.1
    B, C = torch.randn(2, batch, K, L, N, generator=generator)
    skip, bias = torch.randn(2, K, D, generator=generator)
    dt = F.softplus(delta + bias[None, :, None, :]).double().transpose(2, 3)  # (b, G, D, L)
    y = routed_scan_ref(u.double().transpose(1, 2)[:, None], dt, A.double(), B.double().transpose(2, 3),
                        C.double().transpose(2, 3), routes).sum(1)  # (b, D, L)
    y = y.transpose(1, 2) + u.double() * (skip.double() * routes.weight.double().sum(1, keepdim=True)).sum(0)
    inputs = dict(u=u, delta=delta, A=A, B=B, C=C, Dskip=skip, bias=bias, index=routes.index,
                  keep=(~routes.starts).float(), weight=routes.weight)
    return {name: x.numpy() for name, x in inputs.items()}, y.numpy()


def relative(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("order,K,P,batch,H,W,D,N", CASES)
def test_the_scan_function_in_onnxruntime_matches_the_reference(order, K, P, batch, H, W, D, N):
    inputs, expected = case(order, K, P, batch, H, W, D, N)
    session = ort.InferenceSession(node_model().SerializeToString(), providers=["CPUExecutionProvider"])
    assert relative(session.run(None, inputs)[0], expected) <= 1e-5


@pytest.fixture(scope="module")
def fused_core():
    """An OpenVINO Core with ssmad's extension, or a skip saying why it cannot be built here."""
    ov = pytest.importorskip("openvino")
    from ssmad.export.openvino_ext import OpenVinoExtensionError, extension_library

    try:
        library = extension_library()
    except OpenVinoExtensionError as error:
        pytest.skip(f"ssmad's OpenVINO extension is unavailable here: {error}")
    core = ov.Core()
    core.add_extension(str(library))
    return core


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("order,K,P,batch,H,W,D,N", CASES)
def test_the_fused_openvino_operator_matches_the_reference(fused_core, order, K, P, batch, H, W, D, N, threads):
    inputs, expected = case(order, K, P, batch, H, W, D, N)
    model = fused_core.read_model(node_model().SerializeToString())
    assert "RoutedScan" in [op.get_type_name() for op in model.get_ops()]  # the node became the fused operator
    with kept_signal_stack():
        compiled = fused_core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    assert relative(compiled(inputs)[0], expected) <= 1e-5


def test_without_a_compiler_openvino_runs_the_standard_graph_and_says_so(monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    from ssmad.export.graph import openvino_core
    from ssmad.export.openvino_ext import OpenVinoExtensionError, extension_library

    monkeypatch.setenv("SSMAD_CACHE_DIR", str(tmp_path))  # nothing built yet
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(OpenVinoExtensionError, match="no C.. compiler no-such-compiler found"):
        extension_library()
    with pytest.warns(UserWarning, match="runs the scan as standard operators"):
        _, library = openvino_core()
    assert library is None


def test_an_ir_with_the_fused_scan_needs_its_library_beside_it(fused_core, tmp_path):
    import openvino as ov

    from ssmad.export import ExportedModelError
    from ssmad.export.loading import read_openvino
    from ssmad.export.openvino_ext import LIBRARY_NAME, extension_library

    ov.save_model(fused_core.read_model(node_model().SerializeToString()), str(tmp_path / "scan.xml"))
    with pytest.raises(ExportedModelError, match=f"needs {LIBRARY_NAME} beside it"):
        read_openvino(tmp_path / "scan.xml")
    (tmp_path / LIBRARY_NAME).write_bytes(extension_library().read_bytes())
    _, model = read_openvino(tmp_path / "scan.xml")
    assert "RoutedScan" in [op.get_type_name() for op in model.get_ops()]
