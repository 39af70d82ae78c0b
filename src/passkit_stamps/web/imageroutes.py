"""Stamp images at content-addressed URLs (``/images/<template>/v<version>/<digest>/<file>``).

The names come from :func:`passkit_stamps.images.image_name`: a name changes whenever the picture
changes, so a response never goes stale and is served as ``immutable`` for a year. Google fetches
these when a pass is saved; the card page shows them.
"""

from __future__ import annotations

import hashlib
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import images
from ..errors import ImageError, NotFoundError
from .context import WebContext

IMMUTABLE = "public, max-age=31536000, immutable"

_NAME = re.compile(
    r"([a-z0-9][a-z0-9_-]{0,62})/v([0-9]{1,9})/[A-Za-z0-9._@-]{1,64}(/[A-Za-z0-9._@-]{1,64}){0,3}"
)


def _not_found() -> Response:
    return Response("not found\n", status_code=404, media_type="text/plain")


class ImageRoutes:
    """``GET /images/{name}``: render (cached) and serve a current image name."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [Route("/images/{name:path}", self.image, methods=["GET", "HEAD"])]

    async def image(self, request: Request) -> Response:
        name = request.path_params["name"]
        match = _NAME.fullmatch(name)
        if match is None or ".." in name:
            return _not_found()
        template_id, version = match.group(1), int(match.group(2))
        try:
            template = await self.ctx.service.get_template(template_id, version)
            data = await run_in_threadpool(images.render_named, template, name)
        except (NotFoundError, ImageError):
            return _not_found()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        headers = {"Cache-Control": IMMUTABLE, "ETag": etag}
        if etag in _etags(request.headers.get("if-none-match")):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return Response(b"", headers=headers, media_type="image/png")
        return Response(data, headers=headers, media_type="image/png")


def _etags(header: str | None) -> set[str]:
    if not header or len(header) > 2048:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
