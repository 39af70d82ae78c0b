"""Every Python example of docs/merchant.md's API section runs as written: the serving example
on its own, the client examples against the API under uvicorn (keys and a scanned serial from
the environment, as the examples say)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .server import running_api

DOC = Path(__file__).resolve().parents[2] / "docs" / "merchant.md"


def api_examples() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## The JSON API for tills and back offices")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    blocks = []
    for part in section.split("```python")[1:]:
        blocks.append(part[: part.index("```")])
    return blocks


def test_the_section_has_examples() -> None:
    examples = api_examples()
    assert len(examples) >= 4
    assert "create_api" in examples[0]


def run(code: str, cwd: Path, env: dict[str, str]) -> str:
    script = cwd / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_serving_example(tmp_path: Path) -> None:
    run(api_examples()[0], tmp_path, os.environ.copy())
    assert (tmp_path / "loyalty.db").exists()


@pytest.mark.parametrize("index", [1, 2, 3])
def test_client_examples(index: int, tmp_path: Path) -> None:
    with running_api("sqlite", tmp_path) as served:
        env = dict(
            os.environ,
            PASSKIT_STAMPS_API_URL=served.base_url,
            PASSKIT_STAMPS_STAFF_KEY=served.keys["staff"],
            PASSKIT_STAMPS_MANAGER_KEY=served.keys["manager"],
            PASSKIT_STAMPS_SCANNED=served.serials[1] + "\n",
        )
        out = run(api_examples()[index], tmp_path, env)
    assert out.strip()
    if index == 2:
        assert out.startswith("1 of 8 stamps")
    if index == 3:
        assert (tmp_path / "customers.csv").read_text(encoding="utf-8").startswith("serial,")
