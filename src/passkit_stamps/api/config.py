"""The API's configuration."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import WebConfigError
from ..web.config import WebConfig


@dataclass(frozen=True)
class ApiConfig:
    """``web``: the web app's configuration, for the card page and .pkpass URLs the API returns
    (without it they are null). ``rate``/``burst``: requests a second per key and the burst a
    key may send at once. ``max_body``: request bodies are refused (413) past this many bytes,
    while reading. ``key_failures``/``key_failure_window``: a client address (an IPv6 one by its
    /64) may present that many refused API keys at once, refilled over the window in seconds;
    beyond that its requests get 429 before their key is looked at."""

    web: WebConfig | None = None
    rate: float = 20.0
    burst: int = 40
    max_body: int = 16 * 1024
    key_failures: int = 10
    key_failure_window: float = 60.0

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.burst < 1:
            raise WebConfigError("API rate must be > 0 requests a second and burst >= 1")
        if self.key_failures < 1 or not self.key_failure_window > 0:
            raise WebConfigError("API key_failures must be >= 1 and key_failure_window > 0 s")
        if not 256 <= self.max_body <= 1024 * 1024:
            raise WebConfigError("API max_body must be 256 bytes to 1 MiB")
