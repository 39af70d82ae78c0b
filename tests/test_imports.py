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

HEAVY = ("sqlalchemy", "starlette", "PIL", "uvicorn", "aiosqlite", "asyncpg", "httpx", "h2", "jwt")


def cli(*args: str) -> str:
    """Code that runs ``passkit-stamps ARGS`` in-process."""
    return (
        "from passkit_stamps.cli import main\n"
        f"try:\n    main({list(args)!r})\nexcept SystemExit:\n    pass"
    )


def loaded_after(code: str) -> set[str]:
    """Top-level packages of HEAVY that are in sys.modules after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    return {name for name in modules if name.split(".")[0] in HEAVY}


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
