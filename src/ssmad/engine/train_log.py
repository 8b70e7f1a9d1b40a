"""The training log: ``RUN/train.log`` (main process) and the console."""

from __future__ import annotations

import logging
from pathlib import Path


def make_logger(run_dir: Path, is_main: bool) -> logging.Logger:
    """A logger writing ``RUN/train.log`` (main process) and to the console; other processes: warnings only."""
    logger = logging.getLogger(f"ssmad.train.{run_dir.resolve()}")
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    if is_main and not logger.handlers:
        run_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8", errors="backslashreplace")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(file_handler)
        logger.addHandler(console)
    return logger
