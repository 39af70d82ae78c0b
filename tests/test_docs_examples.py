"""Every ```python block of docs/*.md and README.md runs (issue 12 item 18).

The blocks of one file run in order in one namespace (a later example may use what an earlier
one made), in a temporary directory holding what the examples name: the repository's
``templates/``, a development PKI as ``pass.p12``/``AppleWWDRCAG4.cer`` (also under ``certs/``,
with the PEM pair), a self-made Google service-account key as ``service-account.json``, and the
environment variables the examples read. Top-level ``await`` is allowed (one event loop per
file). A block preceded by ``<!-- example: skip <reason> -->`` is not run: for code that needs
a server, Google's API or a framework that is not a dependency; keep those rare.

docs/testing.md and docs/push.md (tests/apns/test_docs_testing.py) and docs/merchant.md
(tests/mail/test_docs_merchant.py) have their own runners.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import ROOT, TEMPLATES  # tests/conftest.py
from passkit_stamps.runtime.devpki import make_dev_pki

#: Docs with their own example runner.
OWN_RUNNER = {"testing.md", "push.md", "merchant.md"}
#: The README's example spells its password out ("secret"); the others read the environment.
P12_PASSWORD = "secret"

_BLOCK = re.compile(
    r"(?:<!--\s*example:\s*(?P<skip>skip[^>]*?)\s*-->\s*\n)?```python\n(?P<code>.*?)```", re.S
)


def documents() -> list[Path]:
    docs = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in OWN_RUNNER)
    return [*docs, ROOT / "README.md"]


def blocks(path: Path) -> list[tuple[int, str | None, str]]:
    """(line, skip reason or None, code) of each python block."""
    text = path.read_text()
    found = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code"))
        found.append((line, m.group("skip"), m.group("code")))
    return found


def test_skips_are_rare_and_explained() -> None:
    total = skipped = 0
    for path in documents():
        for line, skip, _ in blocks(path):
            total += 1
            if skip is not None:
                skipped += 1
                assert len(skip.split()) >= 3, f"{path.name}:{line}: say why it is skipped"
    assert total >= 15
    assert skipped <= 6, f"{skipped} of {total} examples skipped"


@pytest.fixture
def example_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The working directory the examples expect (see the module documentation)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(TEMPLATES, work / "templates")
    pki = make_dev_pki(tmp_path / "pki", p12_password=P12_PASSWORD)
    certs = work / "certs"
    certs.mkdir()
    for folder in (work, certs):
        shutil.copy(pki.signer_p12, folder / "pass.p12")
        shutil.copy(pki.wwdr_cert, folder / "AppleWWDRCAG4.cer")
    shutil.copy(pki.signer_cert, certs / "pass.cer")
    shutil.copy(pki.signer_key, certs / "pass.key.pem")
    shutil.copy(pki.root_cert, work / "root-ca.pem")
    # docs/certificates.md makes (here: reuses) certs.example/dev and verifies pass.pkpass.
    dev = make_dev_pki(work / "certs.example" / "dev", p12_password="dev-password")
    (work / "pass.pkpass").write_bytes(_a_pass(dev.credentials()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from google.walletfixtures import service_account_info  # tests/google

    (work / "service-account.json").write_text(json.dumps(service_account_info(key)))
    monkeypatch.chdir(work)
    monkeypatch.setenv("PASSKIT_STAMPS_P12_PASSWORD", P12_PASSWORD)
    monkeypatch.setenv("PASSKIT_STAMPS_SECRET_KEY", "ab" * 32)
    return work


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.name)
def test_examples_run(path: Path, example_dir: Path) -> None:
    found = [b for b in blocks(path) if b[1] is None]
    if not found:
        pytest.skip(f"{path.name} has no python example to run")
    namespace: dict[str, Any] = {"__name__": f"docs_example_{path.stem}"}
    loop = asyncio.new_event_loop()
    try:
        for line, _, code in found:
            # Line numbers in tracebacks are the markdown file's.
            source = "\n" * line + code
            compiled = compile(
                source, str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
            )
            result = eval(compiled, namespace)  # the repository's own examples
            if asyncio.iscoroutine(result):
                loop.run_until_complete(result)
    finally:
        loop.run_until_complete(_close_stores(namespace))
        loop.close()
    assert os.getcwd() == str(example_dir)


def _a_pass(credentials: Any) -> bytes:
    from datetime import UTC, datetime

    from passkit_stamps.apple.bundle import PassBuilder
    from passkit_stamps.model import Card, CardTemplate

    template = CardTemplate.load(TEMPLATES / "coffee")
    card = Card(
        serial="113772",
        template_id="coffee",
        template_version=template.version,
        created_at=datetime.now(UTC),
        authentication_token="t" * 32,
    )
    return PassBuilder(credentials).build(template, card)


async def _close_stores(namespace: dict[str, Any]) -> None:
    from passkit_stamps.store.store import Store

    for value in list(namespace.values()):
        if isinstance(value, Store):
            await value.close()
