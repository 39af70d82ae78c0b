"""The README's usage example runs as written (with the development PKI in place of real files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from passkit_stamps.apple import verify_pkpass

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("```python") + len("```python")
    return text[start : text.index("```", start)]


def test_readme_example_issues_stamps_and_writes_a_valid_pass(
    tmp_path: Path,
    dev_pki,
    templates_dir: Path,  # type: ignore[no-untyped-def]
) -> None:
    code = readme_example()
    for old, new in {
        '"pass.p12"': repr(str(dev_pki.signer_p12)),
        'password="secret"': f"password={dev_pki.p12_password!r}",
        '"AppleWWDRCAG4.cer"': repr(str(dev_pki.wwdr_cert)),
        '"templates/coffee"': repr(str(templates_dir / "coffee")),
    }.items():
        assert old in code, f"README example no longer contains {old}"
        code = code.replace(old, new)
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, check=True, timeout=60, env=os.environ.copy()
    )
    verified = verify_pkpass(
        (tmp_path / "ada.pkpass").read_bytes(), ca=dev_pki.root_cert.read_bytes()
    )
    assert verified.pass_json["storeCard"]
    assert (tmp_path / "loyalty.db").exists()
