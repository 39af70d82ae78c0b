"""Every example in docs/testing.md runs as written (python blocks as scripts or, when they name a
test file, with pytest; the shell block as a process)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
BLOCK = re.compile(r"```(python|sh)\n(.*?)```", re.S)


def blocks(language: str) -> list[str]:
    return [
        code for lang, code in BLOCK.findall(DOC.read_text(encoding="utf-8")) if lang == language
    ]


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_the_doc_has_its_examples() -> None:
    assert len(blocks("python")) >= 3 and len(blocks("sh")) == 1


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example_runs(index: int, tmp_path: Path) -> None:
    code = blocks("python")[index].replace(
        '"templates/coffee"', repr(str(ROOT / "templates" / "coffee"))
    )
    first = code.splitlines()[0]
    if first.startswith("# file: "):
        name = first.removeprefix("# file: ").split()[0]
        (tmp_path / name).write_text(code, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name]
    else:
        (tmp_path / "example.py").write_text(code, encoding="utf-8")
        command = [sys.executable, "example.py"]
    done = subprocess.run(
        command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_shell_example_runs(tmp_path: Path) -> None:
    [command] = [line for line in blocks("sh")[0].splitlines() if line.startswith("python ")]
    argv = [sys.executable, *command.split()[1:]]
    process = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        listening = process.stdout.readline().split()
        ca = process.stdout.readline().split()
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert listening[0] == "LISTENING" and int(listening[2]) > 0
    assert ca == ["CA", "fake-apns-ca.pem"]
    assert (tmp_path / "fake-apns-ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    assert out.split()[:2] == ["PUSHES", "0"]
