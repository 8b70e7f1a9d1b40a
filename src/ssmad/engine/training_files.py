"""The image files a training run uses, recorded in its checkpoint so that ``--resume`` can check them.

A run resumes bit for bit only on the same images: the data order and the validation split are
drawn from the file list. The checkpoint records every usable training and validation file with
its size and modification time, and the files screening left out (see
:mod:`ssmad.data.screening`). On resume a file that is gone, new, or changed (rewritten,
corrupted) is an error naming it, instead of a silently different run or a crash mid-way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ssmad.data.layouts import Sample
from ssmad.engine.checkpoint import CheckpointError


def file_stamp(path: Path) -> list:
    """[path, size in bytes, modification time in ns] of a file ([path, -1, -1] when it is gone)."""
    try:
        stat = os.stat(path)
    except OSError:
        return [str(path), -1, -1]
    return [str(path), stat.st_size, stat.st_mtime_ns]


def record_files(usable: list[Sample], rejected: list[tuple[str, str]]) -> dict[str, Any]:
    """What the checkpoint keeps: stamps of the usable files, paths of the rejected ones."""
    return {"usable": [file_stamp(sample.path) for sample in usable], "rejected": [path for path, _ in rejected]}


def _first(paths: list[str], what: str) -> str:
    more = f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""
    return f"training image {paths[0]}{more} {what}"


def check_unchanged(recorded: dict[str, Any], listed: list[Sample], checkpoint: Path) -> list[Sample]:
    """The usable samples of ``listed``, after checking they are the files the run recorded."""
    listed_paths = {str(sample.path) for sample in listed}
    stamps = {stamp[0]: stamp for stamp in recorded["usable"]}
    expected = set(stamps) | set(recorded["rejected"])
    fix = f"--resume of {checkpoint} needs the images the run started with; restore them, or start a new run (another --out)"
    missing = sorted(expected - listed_paths)
    if missing:
        raise CheckpointError(f"{_first(missing, 'is gone')}: {fix}")
    added = sorted(listed_paths - expected)
    if added:
        raise CheckpointError(f"{_first(added, 'was added after the run started')}: {fix}")
    usable = [sample for sample in listed if str(sample.path) in stamps]
    changed = [str(s.path) for s in usable if file_stamp(s.path) != stamps[str(s.path)]]
    if changed:
        raise CheckpointError(f"{_first(changed, 'changed (size or modification time) after the run started')}: {fix}")
    return usable
