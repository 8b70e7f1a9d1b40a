"""Reading ``POST /v1/predict`` bodies: size limit, multipart fields, image decoding.

Every problem is an ``HTTPException`` whose ``detail`` says what was wrong and what to send
instead (docs/serving.md lists them with their status codes).
"""

from __future__ import annotations

from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ssmad.data import ImageReadError, decode_image

IMAGE_FIELD = "image"
CLASS_FIELD = "class"
SEND_HINT = f"send each image as a multipart/form-data file field '{IMAGE_FIELD}', e.g. curl -F {IMAGE_FIELD}=@photo.png"


def _too_large(limit_mb: float) -> str:
    return f"the upload is larger than the {limit_mb:g} MB this server accepts (--max-upload-mb)"


class BodyLimit:
    """ASGI middleware refusing request bodies over ``limit_mb`` with 413, before or while reading."""

    def __init__(self, app: ASGIApp, limit_mb: float):
        self.app = app
        self.limit_mb = limit_mb
        self.limit = int(limit_mb * 1024 * 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": _too_large(self.limit_mb)}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # a body without (or lying about) its Content-Length
                    raise HTTPException(413, _too_large(self.limit_mb))
            return message

        await self.app(scope, limited_receive, send)


async def read_uploads(request: Request, max_images: int) -> tuple[list[tuple[str, bytes]], str | None]:
    """The uploaded files as (filename, bytes) and the ``class`` field (None when absent or empty)."""
    content_type = request.headers.get("content-type", "")
    if request.headers.get("content-length") == "0" or (not content_type and not await request.body()):
        raise HTTPException(400, f"the request body is empty: {SEND_HINT}")
    if not content_type.startswith("multipart/form-data"):
        raise HTTPException(415, f"content type '{content_type or 'none'}' is not multipart/form-data: {SEND_HINT}")
    async with request.form(max_files=max_images, max_fields=16) as form:
        files = form.getlist(IMAGE_FIELD)
        if not files:
            sent = ", ".join(f"'{key}'" for key in dict.fromkeys(form.keys())) or "none"
            raise HTTPException(422, f"no file field '{IMAGE_FIELD}' in the form (fields sent: {sent}): {SEND_HINT}")
        if not all(isinstance(item, UploadFile) for item in files):
            raise HTTPException(422, f"field '{IMAGE_FIELD}' holds text, not a file: {SEND_HINT}")
        uploads = [(item.filename or f"{IMAGE_FIELD}{i + 1}", await item.read()) for i, item in enumerate(files)]
        class_name = form.get(CLASS_FIELD)
    if class_name is not None and not isinstance(class_name, str):
        raise HTTPException(422, f"field '{CLASS_FIELD}' must be text (a class name), not a file")
    return uploads, class_name or None


def decode_uploads(uploads: list[tuple[str, bytes]]) -> list[Image.Image]:
    """Decode every upload like ``read_image`` does files; the first bad one fails the request (400)."""
    images = []
    for i, (filename, data) in enumerate(uploads):
        try:
            images.append(decode_image(data, f"'{filename}' (image {i + 1} of the request)"))
        except ImageReadError as error:
            raise HTTPException(400, str(error)) from error
    return images
