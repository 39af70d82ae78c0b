"""/metrics: Prometheus text from the worker's counters and the outbox's figures."""

from __future__ import annotations

import httpx

from passkit_stamps.delivery.metrics import DeliveryMetrics, serve_metrics
from passkit_stamps.delivery.runner import DeliveryConfig, running_worker
from passkit_stamps.engine import Platform
from passkit_stamps.model import Holder
from passkit_stamps.service import StampService


async def test_metrics_are_served_as_prometheus_text(service: StampService) -> None:
    serial = (await service.issue_card("coffee", Holder(name="Ada"))).card.serial
    await service.record_platform(serial, Platform.GOOGLE, True)
    await service.add_stamps(serial, 1)
    metrics = DeliveryMetrics()
    config = DeliveryConfig(metrics_address=("127.0.0.1", 0))
    async with running_worker(service, config, metrics=metrics) as worker:
        await worker.refresh_stats()
        metrics.failed("google", 'GoogleTransientError "503"')
        metrics.paused["apple"] = "BadCertificate"
        async with (
            serve_metrics(metrics, "127.0.0.1", 0) as (host, port),
            httpx.AsyncClient(base_url=f"http://{host}:{port}") as client,
        ):
            answer = await client.get("/metrics")
            missing = await client.get("/other")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answer.text
    assert 'passkit_outbox_depth{platform="google",state="pending"} 1' in text
    assert 'passkit_outbox_oldest_age_seconds{platform="google"}' in text
    assert 'reason="GoogleTransientError \\"503\\""} 1' in text  # label values escaped
    assert 'passkit_platform_paused{platform="apple"} 1' in text
    assert "# TYPE passkit_deliveries_total counter" in text
    assert missing.status_code == 404
    assert "google 1 pending" in metrics.summary() and "apple PAUSED" in metrics.summary()
