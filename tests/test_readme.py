"""The README's usage example runs as written (with the development PKI in place of real files)."""

from __future__ import annotations

import os
import shlex
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


def readme_commands() -> list[list[str]]:
    """The commands of the README's command-line example, one argument list each."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The command line") :]
    start = section.index("```sh") + len("```sh")
    block = section[start : section.index("```", start)].replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        for part in filter(None, (p.strip() for p in line.split("&&"))):
            commands.append(shlex.split(part))
    return commands


def test_readme_command_line_example_runs(tmp_path: Path, templates_dir: Path) -> None:
    (tmp_path / "templates").symlink_to(templates_dir)
    serial = None
    for args in readme_commands():
        assert args[0] == "passkit-stamps", args
        args = [serial if a == "SERIAL" else a for a in args[1:]]
        assert None not in args, "the example uses SERIAL before `issue` prints it"
        result = subprocess.run(
            [sys.executable, "-m", "passkit_stamps", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        if args[0] == "issue":
            serial = result.stdout.split()[1].rstrip(":")
    assert serial is not None
    assert (tmp_path / "cards.csv").exists()
