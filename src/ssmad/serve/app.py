"""The FastAPI application: routes, API key, warm-up, and serving it with uvicorn.

Routes: ``GET /`` (the web page), ``POST /v1/predict``, ``GET /v1/model``, ``GET /healthz``,
``GET /docs`` (OpenAPI). With an API key, ``/v1/*`` needs it (header ``X-API-Key: KEY`` or
``Authorization: Bearer KEY``); the page, ``/healthz`` and the docs stay open so that a load
balancer can probe and a person can type the key into the page.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

import ssmad
from ssmad.serve.batching import Batcher, QueueFull
from ssmad.serve.results import image_record, model_info, score_images
from ssmad.serve.uploads import CLASS_FIELD, IMAGE_FIELD, BodyLimit, decode_uploads, read_uploads

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("ssmad.serve")

PREDICT_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": [IMAGE_FIELD],
        "properties": {
            IMAGE_FIELD: {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "one or several image files (PNG, JPEG, BMP, TIFF, WebP)"},
            CLASS_FIELD: {"type": "string", "description": "a trained class whose threshold every image gets "
                          "(default: the only class, else the global threshold)"},
        },
    }}},
}


@dataclass(frozen=True)
class ServeSettings:
    """Service limits. ``max_queue``: images waiting at most (more: 503 with Retry-After; also the
    most images one request may send); ``timeout_s``: a request not answered by then gets 504."""

    max_batch: int = 8
    max_queue: int = 64
    batch_wait_ms: float = 10.0
    timeout_s: float = 30.0
    max_upload_mb: float = 20.0
    api_key: str | None = None


def create_app(detector, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The service for ``detector`` (anything with the ``Detector`` interface)."""
    state = {"ready": False, "warm_error": None}
    batcher: Batcher | None = None

    async def warm_up() -> None:
        geometries = sorted(set(detector.geometries.values()))
        blanks = [Image.new("RGB", (g.width, g.height), (128, 128, 128)) for g in geometries for _ in range(settings.max_batch)]
        try:
            await batcher.on_inference_thread(score_images, detector, blanks, [None] * len(blanks))
            state["ready"] = True
            log.info("model warmed up at batch %d: ready", settings.max_batch)
        except Exception as error:  # noqa: BLE001 - reported by /healthz
            state["warm_error"] = f"warm-up failed: {error}"
            log.exception("warm-up failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal batcher
        batcher = Batcher(lambda images, classes: score_images(detector, images, classes),
                          settings.max_batch, settings.max_queue, settings.batch_wait_ms / 1000)
        batcher.start()
        warm_task = asyncio.create_task(warm_up())
        yield
        warm_task.cancel()
        await batcher.stop()

    app = FastAPI(
        title="ssmad inspection service", version=ssmad.__version__, lifespan=lifespan,
        description="Anomaly score, decision and heatmap of images, from a multi-class Mamba anomaly detector.",
    )
    app.add_middleware(BodyLimit, limit_mb=settings.max_upload_mb)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="needed when the server has --api-key")

    def check_key(request: Request, key: str | None = Depends(header_key)) -> None:
        if settings.api_key is None:
            return
        bearer = request.headers.get("authorization", "")
        given = key or (bearer[7:] if bearer.lower().startswith("bearer ") else "")
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send it as header 'X-API-Key: KEY' "
                                "(or 'Authorization: Bearer KEY')", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", summary="200 once the model is warmed up (kernels compiled), else 503")
    async def healthz() -> JSONResponse:
        if state["warm_error"]:
            return JSONResponse({"status": "failed", "detail": state["warm_error"]}, status_code=500)
        if not state["ready"]:
            return JSONResponse({"status": "warming up"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ready", "queued_images": batcher.waiting})

    @app.get("/v1/model", dependencies=[Depends(check_key)], summary="preset, classes, thresholds, input size, version")
    async def model() -> dict:
        return model_info(detector, settings.max_batch, settings.max_upload_mb)

    @app.post("/v1/predict", dependencies=[Depends(check_key)], openapi_extra={"requestBody": PREDICT_BODY},
              summary="score images: score, normalised score, threshold, decision, class, defect regions, overlay PNG")
    async def predict(request: Request, overlay: bool = True, mask: bool = False) -> dict:
        """One record per image, in upload order, with its defect regions. ``overlay=false`` leaves
        ``overlay_png`` null; ``mask=true`` adds the defect mask as a base64 PNG (``mask_png``).

        A bad image (undecodable, or not holding its class's region of interest) fails the whole
        request (400, naming it); nothing of it is scored.
        """
        uploads, class_name = await read_uploads(request, settings.max_queue)
        try:
            detector.check_class(class_name)
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        images = await run_in_threadpool(decode_uploads, uploads)
        try:
            sources = [f"'{name}' (image {i + 1} of the request)" for i, (name, _) in enumerate(uploads)]
            detector.check_regions(images, sources, class_name)
        except ValueError as error:
            raise HTTPException(400, str(error)) from error
        try:
            scored = await asyncio.wait_for(batcher.submit(images, [class_name] * len(images)), settings.timeout_s)
        except QueueFull as full:
            retry = max(1, math.ceil(batcher.waiting / settings.max_batch * batcher.last_batch_s))
            raise HTTPException(503, f"server busy: {full}; retry in {retry} s",
                                headers={"Retry-After": str(retry)}) from full
        except asyncio.TimeoutError as timeout:
            raise HTTPException(504, f"not scored within {settings.timeout_s:g} s (server overloaded): "
                                "retry later, or start the server with a larger --timeout") from timeout
        records = await run_in_threadpool(
            lambda: [image_record(i, name, image, s, overlay, mask) for i, ((name, _), image, s) in enumerate(zip(uploads, images, scored))]
        )
        return {"results": records}

    return app


def run(detector, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``detector`` with uvicorn until interrupted (Ctrl-C, SIGTERM)."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach this port can use the model", host)
    uvicorn.run(create_app(detector, settings), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
