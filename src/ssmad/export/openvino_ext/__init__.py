"""ssmad's OpenVINO extension: the fused routed scan as the OpenVINO operator ``ssmad::RoutedScan``
(C++ sources beside this file, built by ``build``; ``python -m ssmad.export.openvino_ext`` builds
it and prints the library's path).

The artifacts:
- ``model.onnx`` (``ssmad export``) holds standard ONNX only: each SS2D layer's scan is one node
  ``ssmad.RoutedScan`` whose body, a model-local function of standard operators
  (``ssmad.export.scan_function``), is in the file. onnxruntime runs it as it is. OpenVINO reads
  it with this extension, whose ONNX frontend conversion replaces each node by the fused
  operator; OpenVINO without the extension does not expand model-local functions, so ssmad
  inlines the function first (``ssmad.export.graph.inlined``) and runs the standard graph.
- ``model.xml`` / ``.bin`` (``--format openvino``, ``--int8``): with the extension, the IR holds
  the fused operator and the compiled ``libssmad_openvino.so`` is written beside it, its
  metadata's ``openvino_extension`` naming it; ``ssmad.load`` adds it. Without a compiler (or
  off Linux) a warning, and the IR holds the standard graph (``openvino_extension`` null).

Loading such an IR yourself, from Python or C++ (the library is built for the OpenVINO version it
was compiled against, and loads on any x86-64 CPU, picking AVX-512, AVX2 or baseline code)::

    core = openvino.Core(); core.add_extension("libssmad_openvino.so")    # C++: core.add_extension(path)
    compiled = core.compile_model(core.read_model("model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

The fused operator computes in float32 only (an INT8 model's scan stays float32).
"""

from ssmad.export.openvino_ext.build import LIBRARY_NAME, OpenVinoExtensionError, extension_library

__all__ = ["LIBRARY_NAME", "OpenVinoExtensionError", "extension_library"]
