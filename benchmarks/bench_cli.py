"""CLI start-up benchmark: import cost of the package and of the command line, and wall time.

    .venv/bin/python benchmarks/bench_cli.py [--runs 15]

Measures, each in a fresh interpreter:
- ``python -X importtime``: cumulative microseconds and module count of ``import passkit_stamps``
  and of the CLI entry (``import passkit_stamps.cli``);
- peak RSS, median wall time and median CPU time of ``passkit-stamps --help`` and of
  ``passkit-stamps stamp SERIAL --db sqlite:///...`` on a store seeded with one template and one
  card (each run adds one stamp; the template allows enough rounds for every run).

The code measured is whatever ``passkit_stamps`` the subprocesses import: this checkout's ``src``,
or ``PYTHONPATH`` when set, so the same script measures a baseline checkout too::

    PYTHONPATH=/work/baseline/src .venv/bin/python benchmarks/bench_cli.py
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "passkit_stamps"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(ROOT / "src"))
    env.pop("PASSKIT_STAMPS_DB", None)
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


def import_cost(statement: str, runs: int) -> tuple[int, int]:
    """Median cumulative µs over ``runs`` interpreters, and the module count."""
    totals = []
    modules = 0
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", statement],
            env=_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        total, modules = _parse_importtime(result.stderr)
        totals.append(total)
    return int(statistics.median(totals)), modules


def run_cli(args: list[str], runs: int) -> tuple[float, float, int]:
    """(median wall seconds, median CPU seconds, max peak RSS in KiB) of ``passkit-stamps ARGS``.

    CPU time (user + system) of the process is less disturbed by other load on the machine than
    wall time, so both are printed.
    """
    walls = []
    cpus = []
    peak = 0
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*CLI, *args], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        cpus.append(usage.ru_utime + usage.ru_stime)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"passkit-stamps {' '.join(args)} exited {proc.returncode}")
        peak = max(peak, usage.ru_maxrss)  # KiB on Linux
    return statistics.median(walls), statistics.median(cpus), peak


def seed(db: str) -> str:
    """Publish the coffee template and issue one card; its serial."""
    env = _env()
    subprocess.run(
        [*CLI, "templates", "publish", str(ROOT / "templates" / "coffee"), "--db", db],
        env=env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [*CLI, "issue", "coffee", "--name", "Ada Lovelace", "--db", db, "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return str(json.loads(out)["card"]["serial"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="Runs per row (median).")
    args = parser.parse_args()
    source = subprocess.run(
        [sys.executable, "-c", "import passkit_stamps.errors as e; print(e.__file__)"],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"passkit_stamps from {Path(source).parent.parent}, {args.runs} runs per row")
    rows: list[tuple[str, str, str, str, str, str]] = []
    for label, statement in (
        ("import passkit_stamps", "import passkit_stamps"),
        ("import passkit_stamps.cli", "import passkit_stamps.cli"),
    ):
        micros, modules = import_cost(statement, args.runs)
        rows.append((label, f"{micros / 1000:,.1f} ms", f"{modules}", "-", "-", "-"))
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        serial = seed(db)
        for label, cli_args in (
            ("passkit-stamps --help", ["--help"]),
            ("passkit-stamps stamp (SQLite)", ["stamp", serial, "--db", db]),
        ):
            wall, cpu, rss = run_cli(cli_args, args.runs)
            rows.append(
                (
                    label,
                    "-",
                    "-",
                    f"{wall * 1000:,.0f} ms",
                    f"{cpu * 1000:,.0f} ms",
                    f"{rss / 1024:,.1f} MiB",
                )
            )
    headers = ("what", "importtime", "modules", "wall (median)", "CPU (median)", "peak RSS")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
