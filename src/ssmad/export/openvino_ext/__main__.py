"""``python -m ssmad.export.openvino_ext [--rebuild]``: build ssmad's OpenVINO extension, print its path."""

import sys

from ssmad.export.openvino_ext import OpenVinoExtensionError, extension_library

try:
    print(extension_library(rebuild="--rebuild" in sys.argv[1:]))
except OpenVinoExtensionError as error:
    sys.exit(str(error))
