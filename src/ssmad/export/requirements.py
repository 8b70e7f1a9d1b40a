"""The optional packages of export and deployment, imported on first use."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA_HINT = "pip install 'ssmad[export]'"
OPENVINO_HINT = "pip install 'ssmad[openvino]'"


def require(module: str, hint: str = EXTRA_HINT) -> ModuleType:
    """Import ``module`` or raise ImportError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{module} is not installed: {hint}") from error
