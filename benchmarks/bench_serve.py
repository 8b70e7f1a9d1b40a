"""Serving throughput: ``ssmad serve`` under concurrent clients vs offline ``Detector.predict``.

    python benchmarks/bench_serve.py RUN [--clients 16] [--requests 20] [--max-batch 8] [--overlay]

Starts ``ssmad serve RUN`` on 127.0.0.1 (a free port), waits for /healthz, then
1. offline baseline: a separate process scores the same image with ``Detector.predict`` at batch
   ``--max-batch`` while the server and this client process sit idle (they share the cores);
2. load: ``--clients`` threads x ``--requests`` sequential requests of one image each;
3. the offline baseline again;
and prints requests/s, p50/p95 latency, errors, the ratio to the mean offline images/s, and the
same ratio per CPU second (the server's CPU time against the offline process's), which other
jobs on the same cores do not change.
Bounded: every request has a timeout, and the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from serve_tiny import running_server  # noqa: E402

from ssmad.serve.load_generator import run_load  # noqa: E402


def offline(run: str, image_file: str, batch: int, batches: int) -> None:
    """Print the offline images/s of ``Detector.predict`` at ``batch`` (after one warm-up batch)."""
    import ssmad
    from ssmad.data import read_image

    detector = ssmad.load(run, device="cpu")
    images = [read_image(image_file)] * batch
    detector.predict(images, batch_size=batch)
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(batches):
        detector.predict(images, batch_size=batch)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"offline_images_per_s": batch * batches / wall, "offline_images_per_cpu_s": batch * batches / cpu}))


def baseline(args: argparse.Namespace) -> dict:
    """Run :func:`offline` in a fresh process; its printed figures."""
    done = subprocess.run(
        [sys.executable, __file__, args.run, "--offline", "--image", args.image, "--max-batch", str(args.max_batch),
         "--offline-batches", str(args.offline_batches)],
        check=True, capture_output=True, text=True, timeout=1800,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def server_pid(url: str) -> int:
    """The process id of the ``ssmad serve`` listening on ``url``'s port (found in /proc)."""
    port = url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and b"--port" in argv and argv[argv.index(b"--port") + 1] == port.encode():
            return int(entry.name)
    raise RuntimeError(f"no ssmad serve process on port {port}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--offline-batches", type=int, default=8)
    parser.add_argument("--overlay", action="store_true", help="ask for the overlay PNG in every answer")
    parser.add_argument("--image", help="image file to send (default: a random 256 px PNG)")
    parser.add_argument("--offline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.offline:
        offline(args.run, args.image, args.max_batch, args.offline_batches)
        return
    if args.image is None:
        import numpy as np
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buffer, "PNG")
        args.image = "/tmp/bench_serve_image.png"
        Path(args.image).write_bytes(buffer.getvalue())
    image = Path(args.image).read_bytes()
    with running_server(Path(args.run), "--max-batch", str(args.max_batch), "--timeout", "300", ready_s=600) as url:
        before = baseline(args)
        server_cpu = cpu_seconds(server_pid(url))
        report = run_load(url, image, args.clients, args.requests, overlay=args.overlay, timeout_s=600)
        server_cpu = cpu_seconds(server_pid(url)) - server_cpu
        after = baseline(args)
    summary = report.summary()
    offline_rate = (before["offline_images_per_s"] + after["offline_images_per_s"]) / 2
    offline_cpu_rate = (before["offline_images_per_cpu_s"] + after["offline_images_per_cpu_s"]) / 2
    summary.update(
        offline_images_per_s=[before["offline_images_per_s"], after["offline_images_per_s"]],
        ratio=summary["requests_per_s"] / offline_rate,
        ratio_per_cpu_s=report.answered / server_cpu / offline_cpu_rate,
        clients=args.clients, max_batch=args.max_batch, overlay=args.overlay,
    )
    print(json.dumps(summary))
    for failure in report.failures[:5]:
        print("failure:", failure)


if __name__ == "__main__":
    main()
