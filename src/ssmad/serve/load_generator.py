"""A bounded load generator for a running service (standard library only).

``run_load(url, image, clients=16, requests_per_client=20)`` starts ``clients`` threads, each
sending its requests one after another (one image each, ``overlay=false`` unless asked), and
reports requests/s, latency percentiles, and every failure with its status. Used by the load
test and ``benchmarks/bench_serve.py``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadReport:
    """Outcome of :func:`run_load`: ``latencies`` (s) of the answered requests, ``failures`` as text."""

    sent: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict:
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        return {
            "sent": self.sent, "answered": self.answered, "errors": len(self.failures),
            "requests_per_s": self.answered / self.seconds, "p50_ms": 1000 * float(np.percentile(lat, 50)),
            "p95_ms": 1000 * float(np.percentile(lat, 95)),
        }


def multipart_body(image: bytes, filename: str = "image.png") -> tuple[bytes, str]:
    """(body, content type) of a form with one file field ``image``."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def run_load(
    url: str, image: bytes, clients: int = 16, requests_per_client: int = 20, overlay: bool = False,
    timeout_s: float = 120.0, api_key: str | None = None,
) -> LoadReport:
    """Send ``clients`` x ``requests_per_client`` predictions to the service at ``url``; wait for all."""
    parts = urlsplit(url)
    body, content_type = multipart_body(image)
    headers = {"Content-Type": content_type, **({"X-API-Key": api_key} if api_key else {})}
    path = f"/v1/predict?overlay={'true' if overlay else 'false'}"
    report = LoadReport(sent=clients * requests_per_client, seconds=0.0)
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        for _ in range(requests_per_client):
            started = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                ok = response.status == 200 and len(json.loads(payload)["results"]) == 1
                outcome = None if ok else f"{response.status}: {payload[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
                outcome = f"{type(error).__name__}: {error}"
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
            with lock:
                if outcome is None:
                    report.latencies.append(time.perf_counter() - started)
                else:
                    report.failures.append(outcome)
        connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.perf_counter() - started
    return report
