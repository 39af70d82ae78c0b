"""E-mail from the real commands (issue 13): ``worker --smtp-url`` and ``serve --smtp-url`` send
the outbox's e-mail rows to a real SMTP server on loopback (aiosmtpd): plain, STARTTLS and
SMTPS, with the login in the URL. The password never shows in the log, in ``--help`` or in an
error. Without ``--smtp-url`` the rows stay queued and ``outbox`` lists them."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest

from cli.served_process import CLI, cli, free_port, running
from passkit_stamps.model import CardTemplate, Holder
from passkit_stamps.runtime.devpki import DevPKI
from passkit_stamps.service import StampService
from passkit_stamps.store.store import Store
from passkit_stamps.web.config import WebConfig

from .conftest import Recorder, SmtpServer, TlsSmtp

SECRET_HEX = "5a" * 16
PUBLIC = "https://stamps.example.com"
WEB = WebConfig(public_url=PUBLIC, mount_path="/wallet", secret_key=bytes.fromhex(SECRET_HEX))
PASSWORD = "p@ss word"  # what the test SMTP server accepts for user "shop"
WRONG = "Wr0ng-s3cret!"
SENDER = "Bean There <shop@beanthere.example>"


def _login_url(port: int, password: str, scheme: str = "smtp", **query: str) -> str:
    q = "".join(f"&{k}={v}" for k, v in query.items())
    return (
        f"{scheme}://shop:{quote(password, safe='')}@127.0.0.1:{port}/"
        f"?from={quote(SENDER, safe='')}{q}"
    )


def _secrets_of(password: str) -> list[str]:
    """The password as it could leak: plain, percent-encoded, in parts."""
    return [password, quote(password, safe=""), quote(password), password.split()[-1]]


@pytest.fixture
async def shop(tmp_path: Path, coffee: CardTemplate) -> AsyncIterator[tuple[str, StampService]]:
    """A SQLite store with the coffee template, open in this process too."""
    url = f"sqlite:///{tmp_path}/shop.db"
    async with await Store.open(url) as store:
        service = StampService(store)
        await service.publish_template(coffee)
        yield url, service


def _worker_env(db: str, smtp_url: str | None, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSKIT_STAMPS_")} | {
        "PASSKIT_STAMPS_DB": db,
        "PASSKIT_STAMPS_NO_APPLE": "1",
        "PASSKIT_STAMPS_POLL_INTERVAL": "0.1",
        "PASSKIT_STAMPS_PUBLIC_URL": PUBLIC,
        "PASSKIT_STAMPS_MOUNT_PATH": "/wallet",
        "PASSKIT_STAMPS_SECRET_KEY": SECRET_HEX,
    }
    if smtp_url is not None:
        env["PASSKIT_STAMPS_SMTP_URL"] = smtp_url
    return env | more


async def _wait_for(recorder: Recorder, count: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while len(recorder.messages) < count:
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.1)


async def _wait_for_log(log: Path, text: str) -> None:
    deadline = time.monotonic() + 60
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.1)


async def _message_card(service: StampService, email: str = "juergen@example.com") -> str:
    holder = Holder(name="Jürgen", email=email)
    serial = (await service.issue_card("coffee", holder, language="en")).card.serial
    await service.send_message(serial, "Double stamps this Friday ☕", email=True)
    return serial


async def test_worker_sends_email_with_the_login_from_the_url(
    shop: tuple[str, StampService], smtp: SmtpServer, tmp_path: Path
) -> None:
    db, service = shop
    serial = await _message_card(service)
    metrics = free_port()
    log = tmp_path / "worker.log"
    env = _worker_env(db, _login_url(smtp.port, PASSWORD))
    with running(["worker", "--metrics", f"127.0.0.1:{metrics}"], log=log, env=env):
        await _wait_for(smtp.recorder, 1, log)
        # The row is removed once sent: the dispatcher counts it delivered.
        async with httpx.AsyncClient(timeout=20) as client:
            deadline = time.monotonic() + 30
            while True:
                text = (await client.get(f"http://127.0.0.1:{metrics}/metrics")).text
                if 'passkit_deliveries_total{platform="email"} 1' in text:
                    break
                assert time.monotonic() < deadline, text
                await asyncio.sleep(0.2)
    [message] = smtp.recorder.messages
    assert message["To"] == "Jürgen <juergen@example.com>"
    assert message["From"] == SENDER
    assert message["Subject"] == "A message from Bean There Coffee"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Double stamps this Friday ☕" in text and WEB.card_page_url(serial) in text
    assert smtp.recorder.envelopes == [("shop@beanthere.example", ["juergen@example.com"])]
    assert await service.pending_email() == []
    out = log.read_text()
    assert "e-mail through 127.0.0.1:" in out and "login shop" in out
    for leak in _secrets_of(PASSWORD):
        assert leak not in out


async def test_a_refused_login_keeps_the_email_and_never_shows_the_password(
    shop: tuple[str, StampService], smtp: SmtpServer, tmp_path: Path
) -> None:
    db, service = shop
    await _message_card(service)
    url = _login_url(smtp.port, WRONG, timeout="5")
    log = tmp_path / "worker.log"
    with running(["worker"], log=log, env=_worker_env(db, url)):
        await _wait_for_log(log, "not sent, will retry")
    # The server's refusal (535), not a read timeout.
    assert "refused (535)" in log.read_text(), log.read_text()
    [job] = await service.pending_email()
    assert job.attempts >= 1
    assert smtp.recorder.messages == []
    out = log.read_text()
    for leak in _secrets_of(WRONG):
        assert leak not in out
    # --help with the URL in the environment, and a URL the worker refuses, echo no password.
    helps = [
        subprocess.run(
            [*CLI, command, "--help"], env=_worker_env(db, url), capture_output=True, text=True
        )
        for command in ("worker", "serve")
    ]
    for shown in helps:
        assert shown.returncode == 0 and "--smtp-url" in shown.stdout
    bad = f"smtp://shop:{quote(WRONG, safe='')}@127.0.0.1:99999/?from=s@x.example"
    refused = subprocess.run(
        [*CLI, "worker"], env=_worker_env(db, bad), capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "SMTP URL port" in refused.stderr
    outputs = [h.stdout + h.stderr for h in helps] + [refused.stdout + refused.stderr]
    for output in outputs:
        for leak in _secrets_of(WRONG):
            assert leak not in output


async def test_worker_over_starttls_and_smtps(
    shop: tuple[str, StampService], tls_smtp: TlsSmtp, tmp_path: Path
) -> None:
    db, service = shop
    await _message_card(service)
    if tls_smtp.kind == "smtps":
        url = _login_url(tls_smtp.port, PASSWORD, scheme="smtps")
    else:
        url = _login_url(tls_smtp.port, PASSWORD, starttls="1")
    log = tmp_path / "worker.log"
    # The server's self-signed certificate, trusted through OpenSSL's SSL_CERT_FILE.
    env = _worker_env(db, url, SSL_CERT_FILE=str(tls_smtp.cert))
    with running(["worker"], log=log, env=env):
        await _wait_for(tls_smtp.recorder, 1, log)
    assert tls_smtp.recorder.messages[0]["Subject"] == "A message from Bean There Coffee"
    kind = "TLS" if tls_smtp.kind == "smtps" else "STARTTLS"
    assert f"({kind}, login shop)" in log.read_text()
    for leak in _secrets_of(PASSWORD):
        assert leak not in log.read_text()


async def test_without_smtp_url_email_stays_queued_and_outbox_shows_it(
    shop: tuple[str, StampService], tmp_path: Path
) -> None:
    db, service = shop
    await _message_card(service)
    log = tmp_path / "worker.log"
    with running(["worker"], log=log, env=_worker_env(db, None)):
        await _wait_for_log(log, "no SMTP server (--smtp-url)")
        await _wait_for_log(log, "outbox: email 1 pending")  # the worker's first summary
    assert len(await service.pending_email()) == 1
    listing = cli("outbox", "--db", db)
    assert re.search(r"^email\s+1\s+0\s+0\s", listing, re.MULTILINE), listing


def test_worker_email_needs_the_card_page_url(tmp_path: Path) -> None:
    env = _worker_env(f"sqlite:///{tmp_path}/x.db", "smtp://127.0.0.1/?from=s@x.example")
    del env["PASSKIT_STAMPS_SECRET_KEY"]
    done = subprocess.run([*CLI, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--secret-key" in done.stderr and "e-mail" in done.stderr


async def test_serve_sends_the_enrolment_email_from_its_own_dispatcher(
    shop: tuple[str, StampService], smtp: SmtpServer, dev_pki: DevPKI, tmp_path: Path
) -> None:
    db, _ = shop
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _worker_env(db, _login_url(smtp.port, PASSWORD)) | {
        "PASSKIT_STAMPS_PUBLIC_URL": base,
        "PASSKIT_STAMPS_P12_PASSWORD": dev_pki.p12_password,
    }
    args = [
        "serve", "--allow-http", "--port", str(port), "--p12", str(dev_pki.signer_p12),
        "--wwdr", str(dev_pki.wwdr_cert), "--email-from", "Ignored <x@y.example>",
    ]  # fmt: skip
    # The sender once: in the URL or as --email-from, not both.
    both = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    assert both.returncode == 1 and "sender" in both.stderr
    env["PASSKIT_STAMPS_SMTP_URL"] = (
        f"smtp://shop:{quote(PASSWORD, safe='')}@127.0.0.1:{smtp.port}/"
    )
    args[-1] = SENDER
    log = tmp_path / "serve.log"
    web = WebConfig(
        public_url=base, mount_path="/wallet", secret_key=WEB.secret_key, allow_http=True
    )
    with running(args, log=log, env=env, cwd=tmp_path, port=port):
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            form = await client.get("/wallet/enrol/coffee")
            found = re.search(r'name="token" value="([^"]+)"', form.text)
            assert found is not None
            fields = {"token": found.group(1), "language": "en"}
            fields |= {"name": "Ada", "email": "ada@example.com"}
            answer = await client.post("/wallet/enrol/coffee", data=fields)
            assert answer.status_code == 303
            serial = answer.headers["location"].split("/")[-2]
        await _wait_for(smtp.recorder, 1, log)
    [message] = smtp.recorder.messages
    assert message["Subject"] == "Your Free Coffee card"
    assert message["From"] == SENDER
    body = message.get_body(("plain",))
    assert body is not None and web.card_page_url(serial) in body.get_content()
    for leak in _secrets_of(PASSWORD):
        assert leak not in log.read_text()


async def _raw_post(port: int, path: str, body: bytes, cookie: str) -> bytes:
    """A form POST over a socket of its own; the whole answer as bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_serve_private_enrolment_answers_alike_and_emails_both(
    shop: tuple[str, StampService],
    smtp: SmtpServer,
    dev_pki: DevPKI,
    coffee: CardTemplate,
    tmp_path: Path,
) -> None:
    """Over a real server: a new address and the same address again get the same bytes (the
    Date header aside); the new customer gets the card's link by e-mail, the second submission
    the "you already have a card" e-mail with the same link."""
    from passkit_stamps.model import Enrolment

    db, service = shop
    await service.publish_template(coffee.model_copy(update={"enrolment": Enrolment(private=True)}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _worker_env(db, smtp.url()) | {
        "PASSKIT_STAMPS_PUBLIC_URL": base,
        "PASSKIT_STAMPS_P12_PASSWORD": dev_pki.p12_password,
    }
    args = [
        "serve", "--allow-http", "--port", str(port), "--p12", str(dev_pki.signer_p12),
        "--wwdr", str(dev_pki.wwdr_cert),
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    with running(args, log=log, env=env, cwd=tmp_path, port=port):
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            form = await client.get("/wallet/enrol/coffee")
            found = re.search(r'name="token" value="([^"]+)"', form.text)
            assert found is not None
            cookie = f"enrol_nonce={client.cookies['enrol_nonce']}"
        fields = {"token": found.group(1), "language": "en", "name": "Ada"}
        answers = []
        for email in ("ada@example.com", "Ada@Example.com"):
            body = urlencode(fields | {"email": email}).encode()
            answers.append(await _raw_post(port, "/wallet/enrol/coffee", body, cookie))
        await _wait_for(smtp.recorder, 2, log)
    undated = [re.sub(rb"\r\ndate: [^\r]*", b"", a, flags=re.I) for a in answers]
    assert undated[0].startswith(b"HTTP/1.1 303 ")
    assert b"location: /wallet/enrol/coffee/sent?lang=en\r\n" in undated[0]
    assert undated[0] == undated[1]
    [card] = (await service.list_cards(template_id="coffee")).items
    web = WebConfig(
        public_url=base, mount_path="/wallet", secret_key=WEB.secret_key, allow_http=True
    )
    texts = []
    for message in smtp.recorder.messages:
        assert message["To"] == "Ada <ada@example.com>"
        part = message.get_body(("plain",))
        assert part is not None
        texts.append(part.get_content())
    assert all(web.card_page_url(card.serial) in text for text in texts)
    assert "is ready" in texts[0] and "You already have one" in texts[1]
