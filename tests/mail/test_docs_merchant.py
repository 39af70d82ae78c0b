"""The Python examples of docs/merchant.md's enrolment, e-mail and import sections run as
written (in order, on one store; the SMTP URL pointed at the loopback server)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from .conftest import SmtpServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "merchant.md"
SECTIONS = ("## Enrolment", "## E-mail", "## Importing from another platform")


def examples(heading: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    section = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_merchant_examples_run(tmp_path: Path, templates_dir: Path, smtp: SmtpServer) -> None:
    (tmp_path / "templates").symlink_to(templates_dir)
    outputs = []
    for heading in SECTIONS:
        [code] = examples(heading)
        if heading == "## E-mail":
            url = re.search(r'"(smtp://[^"]+)"', code)
            assert url is not None
            code = code.replace(url.group(1), smtp.url())
        script = tmp_path / "example.py"
        script.write_text(code, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=os.environ.copy(),
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    enrol, email, imported = outputs
    assert "https://stamps.example.com/wallet/enrol/coffee" in enrol
    assert (tmp_path / "poster.svg").read_bytes().startswith(b"<?xml")
    assert "EmailReport(sent=" in email and "retrying=0" in email
    assert len(smtp.recorder.messages) >= 1
    assert "line 3: email" in imported and imported.strip().endswith("1 1")
