"""Build and cache ssmad's OpenVINO extension (``extension.cpp``, ``scan_kernel.cpp``): the
fused ``ssmad::RoutedScan`` operator and the ONNX frontend's conversion of the exported node.

Compiled with the system's C++ compiler (``$CXX``, else g++ or c++) against the headers and
libraries the installed ``openvino`` wheel ships, on Linux. Portable: no ``-march=native``; the
scan kernel is compiled once per instruction set (x86-64 baseline, AVX2 + FMA, AVX-512) and the
library picks the widest the CPU has when it is loaded. Built once, at first use or by
``python -m ssmad.export.openvino_ext``, into ``$SSMAD_CACHE_DIR`` (default
``$XDG_CACHE_HOME/ssmad``, else ``~/.cache/ssmad``) under ``openvino_ext/<key>/``, the key a
hash of the sources, the flags, the compiler and the OpenVINO version.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ssmad.export.requirements import OPENVINO_HINT, require

LIBRARY_NAME = "libssmad_openvino.so"
SOURCES = Path(__file__).parent
COMMON_FLAGS = ["-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wno-psabi"]
KERNEL_VARIANTS = {  # -DSSMAD_ISA name: its instruction-set flags
    "baseline": [],
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma"],
}


class OpenVinoExtensionError(RuntimeError):
    """The extension cannot be built or loaded here; the message says why and what to do."""


def extension_library(rebuild: bool = False) -> Path:
    """The path of the compiled extension, building it first when the cache has none (or with
    ``rebuild``). OpenVinoExtensionError when it cannot be built here."""
    ov = require("openvino", OPENVINO_HINT)
    if sys.platform != "linux":
        raise OpenVinoExtensionError(f"ssmad's OpenVINO extension is built on Linux only (this is {sys.platform})")
    compiler = shutil.which(os.environ.get("CXX") or "g++") or shutil.which("c++")
    if not compiler:
        raise OpenVinoExtensionError(f"no C++ compiler {os.environ.get('CXX') or 'g++'} found (install g++, or set $CXX)")
    root = Path(ov.__file__).parent
    libraries = [_one(root / "libs", "libopenvino.so*"), _one(root / "libs", "libtbb.so*")]
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    variants = KERNEL_VARIANTS if x86 else {"baseline": []}
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    key = hashlib.sha256(repr((
        [(path.name, path.read_bytes()) for path in sorted(SOURCES.glob("*.[ch]pp"))],
        COMMON_FLAGS, variants, version, ov.__version__, x86,
    )).encode()).hexdigest()[:16]
    target = _cache_root() / "openvino_ext" / key / LIBRARY_NAME
    if target.is_file() and not rebuild:
        return target
    with tempfile.TemporaryDirectory(prefix="ssmad-ov-ext-") as scratch:
        scratch = Path(scratch)
        commands = [
            [compiler, "-O3", *COMMON_FLAGS, *flags, f"-DSSMAD_ISA={name}", "-c", str(SOURCES / "scan_kernel.cpp"),
             "-o", str(scratch / f"kernel_{name}.o")]
            for name, flags in variants.items()
        ]
        commands.append([
            compiler, "-O2", *COMMON_FLAGS, "-DOV_THREAD=4", *(["-DSSMAD_HAVE_X86_VARIANTS"] if x86 else []),
            f"-I{root / 'include'}", "-c", str(SOURCES / "extension.cpp"), "-o", str(scratch / "extension.o"),
        ])  # OV_THREAD 4: TBB_ADAPTIVE, the threading the wheel's OpenVINOConfig.cmake declares
        _run_all(commands)
        built = scratch / LIBRARY_NAME
        _run_all([[compiler, "-shared", "-o", str(built), *(str(path) for path in sorted(scratch.glob("*.o"))),
                   *(str(path) for path in libraries), f"-Wl,-rpath,{root / 'libs'}"]])
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{LIBRARY_NAME}.{os.getpid()}")
        shutil.copyfile(built, staged)
        os.replace(staged, target)  # atomic: a concurrent build of the same key writes the same bytes
    return target


def _cache_root() -> Path:
    if os.environ.get("SSMAD_CACHE_DIR"):
        return Path(os.environ["SSMAD_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ssmad"


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise OpenVinoExtensionError(f"the openvino wheel has no {pattern} in {folder}: reinstall it ({OPENVINO_HINT})")
    return found[0]


def _run_all(commands: list[list[str]]) -> None:
    """Run the compiler commands side by side; OpenVinoExtensionError with the first failure's output."""
    running = [(command, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
               for command in commands]
    outputs = [(command, process.communicate()[0], process.returncode) for command, process in running]
    for command, output, code in outputs:
        if code != 0:
            raise OpenVinoExtensionError(f"building ssmad's OpenVINO extension failed:\n{' '.join(command)}\n{output[-4000:]}")
