"""Writing result files so that a crash, a kill or a full disk never leaves a half-written one.

Every file is written to a temporary sibling (``.NAME.tmp-PID``), flushed to disk and renamed
over ``NAME``: a reader sees the previous file or the new one, never a mix. Temporaries that a
killed process left behind are removed at the next write of the same file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space and run again",
    errno.EDQUOT: "the disk quota is exhausted: free some space and run again",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EROFS: "the file system is read-only: choose another folder",
}


class FileWriteError(OSError):
    """A result file could not be written; the message names it and says the previous one is kept."""


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporaries of ``path`` that earlier (killed) writers left; returns them."""
    stale = sorted(path.parent.glob(f".{path.name}.tmp-*")) if path.parent.is_dir() else []
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); raises FileWriteError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        kept = f"; the previous {path.name} is unchanged" if path.exists() else ""
        reason = _HINTS.get(error.errno, error.strerror or str(error))
        raise FileWriteError(error.errno, f"could not write {path}: {reason}{kept}") from error
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write_bytes`` of UTF-8 text (file names that are not UTF-8 are kept as bytes)."""
    return atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))
