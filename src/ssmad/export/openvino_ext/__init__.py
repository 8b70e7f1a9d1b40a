"""ssmad's OpenVINO extension: the fused routed scan as the OpenVINO operator ``ssmad::RoutedScan``
(C++ sources beside this file, built by ``build``). ``python -m ssmad.export.openvino_ext`` builds
it and prints the library's path."""

from ssmad.export.openvino_ext.build import LIBRARY_NAME, OpenVinoExtensionError, extension_library

__all__ = ["LIBRARY_NAME", "OpenVinoExtensionError", "extension_library"]
