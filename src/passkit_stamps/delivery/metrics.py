"""What operators watch: queue depth and oldest pending age per platform (from the store),
deliveries and failures by platform and reason (counted by the worker), as Prometheus text
(:meth:`DeliveryMetrics.render`, served at ``/metrics`` by :func:`serve_metrics`) and as a log
line (:meth:`DeliveryMetrics.summary`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..service.delivery import OutboxStats


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class DeliveryMetrics:
    """Counters of one process (a worker, or serve with its in-process worker)."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()  # platform -> cards delivered
        self.rows: Counter[str] = Counter()  # platform -> outbox rows acknowledged
        self.failures: Counter[tuple[str, str]] = Counter()  # (platform, reason)
        self.dead: Counter[str] = Counter()  # platform -> rows parked
        self.pushes: Counter[str] = Counter()  # APNs result kind -> pushes
        self.pruned = 0  # registrations removed for dead tokens
        self.paused: dict[str, str] = {}  # platform -> why
        self.queue: list[OutboxStats] = []
        self.queue_at: datetime | None = None
        self.started = time.monotonic()

    def failed(self, platform: str, reason: str) -> None:
        # Reasons are short classes ("410 Unregistered", "RetryLater 503"), not free text:
        # a label per distinct message would grow without bound.
        self.failures[(platform, reason[:60])] += 1

    def render(self) -> str:
        """The Prometheus text exposition (version 0.0.4)."""
        out: list[str] = []

        def family(name: str, kind: str, doc: str) -> None:
            out.append(f"# HELP {name} {doc}")
            out.append(f"# TYPE {name} {kind}")

        now = datetime.now(UTC)
        family("passkit_outbox_depth", "gauge", "Outbox rows by platform and state.")
        for s in self.queue:
            for state, n in (("pending", s.pending), ("retrying", s.retrying), ("dead", s.dead)):
                out.append(
                    f'passkit_outbox_depth{{platform="{_label(s.platform)}",state="{state}"}} {n}'
                )
        family("passkit_outbox_oldest_age_seconds", "gauge", "Age of the oldest row not parked.")
        for s in self.queue:
            age = (now - s.oldest).total_seconds() if s.oldest else 0.0
            out.append(
                f'passkit_outbox_oldest_age_seconds{{platform="{_label(s.platform)}"}} {age:.3f}'
            )
        family("passkit_deliveries_total", "counter", "Cards brought up to date, by platform.")
        for platform, n in sorted(self.deliveries.items()):
            out.append(f'passkit_deliveries_total{{platform="{_label(platform)}"}} {n}')
        family("passkit_delivery_failures_total", "counter", "Failed attempts by reason.")
        for (platform, reason), n in sorted(self.failures.items()):
            out.append(
                f'passkit_delivery_failures_total{{platform="{_label(platform)}",'
                f'reason="{_label(reason)}"}} {n}'
            )
        family("passkit_outbox_dead_total", "counter", "Rows parked dead by this process.")
        for platform, n in sorted(self.dead.items()):
            out.append(f'passkit_outbox_dead_total{{platform="{_label(platform)}"}} {n}')
        family("passkit_apns_pushes_total", "counter", "APNs pushes by result.")
        for kind, n in sorted(self.pushes.items()):
            out.append(f'passkit_apns_pushes_total{{result="{_label(kind)}"}} {n}')
        family("passkit_registrations_pruned_total", "counter", "Dead-token registrations.")
        out.append(f"passkit_registrations_pruned_total {self.pruned}")
        family("passkit_platform_paused", "gauge", "1 while a platform is paused.")
        for platform in sorted(self.paused):
            out.append(f'passkit_platform_paused{{platform="{_label(platform)}"}} 1')
        return "\n".join(out) + "\n"

    def summary(self) -> str:
        """One log line: queue and counters."""
        queue = ", ".join(
            f"{s.platform} {s.pending} pending {s.retrying} retrying {s.dead} dead"
            for s in self.queue
        )
        done = ", ".join(f"{p} {n}" for p, n in sorted(self.deliveries.items())) or "none"
        failed = sum(self.failures.values())
        paused = "; ".join(f"{p} PAUSED: {why}" for p, why in sorted(self.paused.items()))
        return f"outbox: {queue or 'empty'}; delivered {done}; {failed} failed attempt(s)" + (
            f"; {paused}" if paused else ""
        )

    def update_queue(self, stats: Sequence[OutboxStats]) -> None:
        self.queue = list(stats)
        self.queue_at = datetime.now(UTC)


@asynccontextmanager
async def serve_metrics(
    metrics: DeliveryMetrics, host: str = "127.0.0.1", port: int = 9464
) -> AsyncIterator[tuple[str, int]]:
    """A minimal HTTP/1.1 listener answering ``GET /metrics`` with :meth:`DeliveryMetrics.render`
    (anything else: 404); yields the bound (host, port). Opt-in: ``--metrics HOST:PORT``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                body = metrics.render().encode()
                status = b"200 OK"
                kind = b"text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, kind = b"not found\n", b"404 Not Found", b"text/plain"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=16384)
    bound = server.sockets[0].getsockname()
    try:
        yield str(bound[0]), int(bound[1])
    finally:
        server.close()
        await server.wait_closed()
