"""``ssmad serve``: an HTTP inspection service with a web page, on the public detector interface.

``create_app(detector, ServeSettings(...))`` builds the FastAPI application; ``run(detector,
settings)`` serves it with uvicorn. Any object with the :class:`ssmad.engine.detector.Detector`
interface (``predict_decoded``, ``check_class``, ``check_regions``, ``class_names``, ``geometries``,
``rois``, ``tile``, ``calibration``, ``preset``) can be served, so a PyTorch checkpoint and an exported model go
through the same code.

FastAPI, uvicorn and python-multipart are an optional extra: ``pip install "ssmad[serve]"``.
The engine never imports this package.
"""

from __future__ import annotations

import importlib.util

SERVE_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}
INSTALL_HINT = 'pip install "ssmad[serve]"'


class MissingExtraError(ImportError):
    """The ``serve`` extra is not installed; the message names the missing packages and the fix."""


def require_serve_extra() -> None:
    """Raise :class:`MissingExtraError` unless FastAPI, uvicorn and python-multipart import."""
    missing = [package for module, package in SERVE_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingExtraError(f"ssmad serve needs {', '.join(missing)}: {INSTALL_HINT}")


def __getattr__(name: str):
    """Lazy public API: ``create_app``, ``run`` and ``ServeSettings`` (importing FastAPI on first use)."""
    if name in ("create_app", "run", "ServeSettings"):
        require_serve_extra()
        from ssmad.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'ssmad.serve' has no attribute {name!r}")
