"""CLI start-up benchmark: import cost of the package and of the command line, and wall time.

    .venv/bin/python benchmarks/bench_cli.py [--runs 15] [--baseline SRC] [--bytecode]

Measures, each in a fresh interpreter:
- ``python -X importtime``: cumulative microseconds and module count of ``import passkit_stamps``
  and of the CLI entry (``import passkit_stamps.cli``);
- peak RSS, median wall time and median CPU time of ``passkit-stamps --help`` and of
  ``passkit-stamps stamp SERIAL --db sqlite:///...`` on a store seeded with one template and one
  card (each run adds one stamp; the template allows enough rounds for every run).

The code measured is whatever ``passkit_stamps`` the subprocesses import: this checkout's ``src``,
or ``PYTHONPATH`` when set, so the same script measures a baseline checkout too::

    PYTHONPATH=/work/baseline/src .venv/bin/python benchmarks/bench_cli.py

``--baseline SRC`` measures this checkout and the one at ``SRC`` in the same run, their runs
interleaved (A B B A ...), so load on a shared machine falls on both alike; the last column is
the baseline's median over this checkout's (2.00x: twice as fast).

Bytecode: by default the subprocesses inherit the environment (with ``PYTHONDONTWRITEBYTECODE``
set, as in the development container, every run compiles the package's sources again).
``--bytecode`` gives them a cache of compiled modules (a temporary ``PYTHONPYCACHEPREFIX``,
filled by a first run), as an installed package has.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "passkit_stamps"]


@dataclass
class Source:
    """One checkout's ``src`` as the subprocesses see it."""

    label: str
    env: dict[str, str]
    serial: str = ""
    db: str = ""
    figures: dict[str, list[float]] = field(default_factory=dict)


def _env(src: str | None, pycache: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    else:
        env.setdefault("PYTHONPATH", str(ROOT / "src"))
    env.pop("PASSKIT_STAMPS_DB", None)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def _parse_importtime(stderr: str) -> tuple[int, int]:
    total = modules = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        columns = line[len("import time:") :].split("|")
        cumulative, name = columns[1].strip(), columns[2]
        modules += 1
        if name[1:2] != " ":  # a top-level import: " name" (nested ones are indented further)
            total += int(cumulative)
    return total, modules


def import_cost(source: Source, statement: str) -> tuple[int, int]:
    """Cumulative µs of one interpreter running ``statement``, and the module count."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        env=source.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return _parse_importtime(result.stderr)


def run_cli(source: Source, args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in KiB) of one ``passkit-stamps ARGS``.

    CPU time (user + system) of the process is less disturbed by other load on the machine than
    wall time, so both are printed.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*CLI, *args], env=source.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{source.label}: passkit-stamps {' '.join(args)} failed")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss  # KiB on Linux


def seed(source: Source, db: str) -> str:
    """Publish the coffee template and issue one card; its serial."""
    subprocess.run(
        [*CLI, "templates", "publish", str(ROOT / "templates" / "coffee"), "--db", db],
        env=source.env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [*CLI, "issue", "coffee", "--name", "Ada Lovelace", "--db", db, "--json"],
        env=source.env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return str(json.loads(out)["card"]["serial"])


IMPORTS = (
    ("import passkit_stamps", "import passkit_stamps"),
    ("import passkit_stamps.cli", "import passkit_stamps.cli"),
)


def _commands(source: Source) -> tuple[tuple[str, list[str]], ...]:
    return (
        ("passkit-stamps --help", ["--help"]),
        ("passkit-stamps stamp (SQLite)", ["stamp", source.serial, "--db", source.db]),
    )


def measure(sources: list[Source], runs: int) -> None:
    """Every row ``runs`` times per source, the sources interleaved (order alternating)."""
    for i in range(runs):
        order = sources if i % 2 == 0 else sources[::-1]
        for label, statement in IMPORTS:
            for source in order:
                micros, modules = import_cost(source, statement)
                source.figures.setdefault(f"{label}/us", []).append(micros)
                source.figures[f"{label}/modules"] = [modules]
        for source in order:
            for label, args in _commands(source):
                wall, cpu, rss = run_cli(source, args)
                source.figures.setdefault(f"{label}/wall", []).append(wall)
                source.figures.setdefault(f"{label}/cpu", []).append(cpu)
                source.figures.setdefault(f"{label}/rss", []).append(rss)


def _median(source: Source, key: str) -> float:
    return statistics.median(source.figures[key])


def table(sources: list[Source]) -> str:
    headers = ["what", "code", "importtime", "modules", "wall (median)", "CPU (median)", "peak RSS"]
    if len(sources) > 1:
        headers.append(f"{sources[1].label} / {sources[0].label} (wall, CPU)")
    rows: list[list[str]] = []
    for label, _ in IMPORTS:
        for source in sources:
            row = [
                label,
                source.label,
                f"{_median(source, f'{label}/us') / 1000:,.1f} ms",
                f"{int(_median(source, f'{label}/modules'))}",
                "-",
                "-",
                "-",
            ]
            if len(sources) > 1:
                ratio = _median(sources[1], f"{label}/us") / _median(sources[0], f"{label}/us")
                row.append(f"{ratio:.2f}x" if source is sources[0] else "")
            rows.append(row)
    for label, _ in _commands(sources[0]):
        for source in sources:
            row = [
                label,
                source.label,
                "-",
                "-",
                f"{_median(source, f'{label}/wall') * 1000:,.0f} ms",
                f"{_median(source, f'{label}/cpu') * 1000:,.0f} ms",
                f"{max(source.figures[f'{label}/rss']) / 1024:,.1f} MiB",
            ]
            if len(sources) > 1:
                base, this = sources[1], sources[0]
                wall = _median(base, f"{label}/wall") / _median(this, f"{label}/wall")
                cpu = _median(base, f"{label}/cpu") / _median(this, f"{label}/cpu")
                row.append(f"{wall:.2f}x, {cpu:.2f}x" if source is this else "")
            rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _origin(source: Source) -> str:
    found = subprocess.run(
        [sys.executable, "-c", "import passkit_stamps.errors as e; print(e.__file__)"],
        env=source.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return str(Path(found).parent.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="Runs per row (median).")
    parser.add_argument(
        "--baseline",
        metavar="SRC",
        help="Also measure the checkout whose src is SRC, interleaved, and print the ratios.",
    )
    parser.add_argument(
        "--bytecode",
        action="store_true",
        help="Let the subprocesses cache compiled modules (as an installed package has).",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pycache = str(Path(tmp) / "pycache") if args.bytecode else None
        sources = [Source("this", _env(None, pycache))]
        if args.baseline:
            sources.append(Source("baseline", _env(args.baseline, pycache)))
        print(f"load average before: {_load()}")
        bytecode = (
            "cached (--bytecode)"
            if pycache
            else "compiled every run"
            if os.environ.get("PYTHONDONTWRITEBYTECODE")
            else "as the environment has it"
        )
        print(f"{args.runs} runs per row and code; bytecode: {bytecode}")
        for number, source in enumerate(sources):
            print(f"{source.label}: passkit_stamps from {_origin(source)}")
            source.db = f"sqlite:///{Path(tmp) / f'bench{number}.db'}"
            source.serial = seed(source, source.db)
            if pycache:  # fill the bytecode cache before measuring
                run_cli(source, _commands(source)[1][1])
        measure(sources, args.runs)
        print(f"load average after: {_load()}")
        print(table(sources))


if __name__ == "__main__":
    main()
