"""Fast import: the package and the command line load only what is used.

Each case runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from passkit_stamps.cli import main

HEAVY = ("sqlalchemy", "starlette", "PIL", "uvicorn", "aiosqlite", "asyncpg", "httpx", "h2", "jwt")


def cli(*args: str) -> str:
    """Code that runs ``passkit-stamps ARGS`` in-process."""
    return (
        "from passkit_stamps.cli import main\n"
        f"try:\n    main({list(args)!r})\nexcept SystemExit:\n    pass"
    )


def modules_after(code: str) -> list[str]:
    """Every module in sys.modules after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def loaded_after(code: str) -> set[str]:
    """Top-level packages of HEAVY that are in sys.modules after running ``code``."""
    return {name for name in modules_after(code) if name.split(".")[0] in HEAVY}


@pytest.mark.parametrize(
    "code",
    [
        "import passkit_stamps",
        "import passkit_stamps.apple",
        "import passkit_stamps.google",
        "from passkit_stamps import CardTemplate, PasskitStampsError, Card",
        "import passkit_stamps.cli",
        # --help lists every command without importing what the commands use.
        cli("--help"),
    ],
)
def test_importing_loads_no_database_web_or_imaging_library(code: str) -> None:
    assert loaded_after(code) == set()


def test_a_store_command_loads_the_store_but_not_the_web_app(tmp_path: Path) -> None:
    loaded = loaded_after(cli("templates", "list", "--db", f"sqlite:///{tmp_path / 'x.db'}"))
    assert "sqlalchemy" in loaded
    assert not {"starlette", "uvicorn", "httpx"} & loaded


#: What the stamp command does not need (docs/architecture.md, "Start-up cost"): SQLAlchemy's
#: asyncio extension and the ORM it imports (the SQLite store opens on the sqlite3 engine),
#: aiosqlite, jinja2 (a stored template's texts are not checked again and a stamp renders none),
#: the web and HTTP stacks, and the service's other concerns (the card commands run on
#: CardOperations).
NOT_FOR_A_STAMP = (
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.orm",
    "aiosqlite",
    "jinja2",
    "passkit_stamps.templating",
    "starlette",
    "uvicorn",
    "httpx",
    "h2",
    "cryptography",
    "passkit_stamps.service.facade",
    "passkit_stamps.service.reads",
    "passkit_stamps.service.delivery",
    "passkit_stamps.cli.serve",
)


def test_the_stamp_command_loads_only_what_a_stamp_needs(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cards.db'}"
    templates = Path(__file__).resolve().parent.parent / "templates"
    runner = CliRunner()
    published = runner.invoke(main, ["templates", "publish", str(templates / "coffee"), "--db", db])
    assert published.exit_code == 0, published.output
    issued = runner.invoke(main, ["issue", "coffee", "--name", "Ada", "--db", db, "--json"])
    serial = json.loads(issued.output)["card"]["serial"]
    modules = modules_after(cli("stamp", serial, "--db", db))
    stamped = runner.invoke(main, ["card", serial, "--db", db, "--json"])
    assert json.loads(stamped.output)["card"]["stamps"] == 1  # the subprocess made the stamp
    unwanted = {m for m in modules if any(m == n or m.startswith(f"{n}.") for n in NOT_FOR_A_STAMP)}
    assert unwanted == set()


@pytest.mark.parametrize(
    "package", ["passkit_stamps", "passkit_stamps.apple", "passkit_stamps.google"]
)
def test_every_public_name_resolves_and_is_listed(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


def test_public_names_are_the_defining_modules_objects() -> None:
    import passkit_stamps
    from passkit_stamps.service import StampService
    from passkit_stamps.store.store import Store

    assert passkit_stamps.StampService is StampService
    assert passkit_stamps.Store is Store
