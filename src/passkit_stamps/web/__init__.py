"""The mountable web app: Apple's pass web service, images, the card page, Google callbacks."""

from __future__ import annotations

from .app import create_app, web_context
from .config import GoogleWebConfig, WebConfig, card_page_url

__all__ = ["GoogleWebConfig", "WebConfig", "card_page_url", "create_app", "web_context"]
