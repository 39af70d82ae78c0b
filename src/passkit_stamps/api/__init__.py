"""The till and back-office JSON API (``create_api``): API keys with roles, OpenAPI 3.1 at
``/openapi.json``, RFC 9457 problems. See docs/merchant.md."""

from __future__ import annotations

from .app import OPENAPI_PATH, create_api
from .config import ApiConfig

__all__ = ["OPENAPI_PATH", "ApiConfig", "create_api"]
