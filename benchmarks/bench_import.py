"""`passkit-stamps import`: rows per second and peak memory, by file size.

    .venv/bin/python benchmarks/bench_import.py [--rows 10000 100000] [--db postgresql://...]

Each row is a fresh interpreter running the command on a new store (SQLite in a temporary
directory unless --db is given: then a PostgreSQL database it may empty), then the same file
again (the idempotent re-run: nothing imported). Peak RSS from the child's rusage: flat memory
means the same figure for 10,000 and 100,000 rows.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "passkit_stamps"]


def _write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write("name,email,phone,current stamps,serial\n")
        for i in range(rows):
            f.write(f"Customer {i},c{i}@example.com,+1 555 {i:07d},{i % 8},\n")


def _run(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one child process."""
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(ROOT / "src"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([*CLI, *args], check=False, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--db", default=None)
    options = parser.parse_args()
    print(f"{'rows':>8}  {'run':<8}  {'seconds':>8}  {'rows/s':>8}  {'peak RSS':>9}")
    for rows in options.rows:
        with tempfile.TemporaryDirectory() as tmp:
            csv_file = Path(tmp) / "customers.csv"
            _write_csv(csv_file, rows)
            db = options.db or f"sqlite:///{Path(tmp) / 'import.db'}"
            subprocess.run(
                [*CLI, "templates", "publish", str(ROOT / "templates" / "coffee"), "--db", db],
                check=True,
                capture_output=True,
            )
            for label in ("first", "again"):
                args = ["import", str(csv_file), "--template", "coffee", "--db", db]
                seconds, peak = _run([*args, "--no-progress"])
                print(
                    f"{rows:>8}  {label:<8}  {seconds:>8.1f}  {rows / seconds:>8.0f}  "
                    f"{peak:>6.1f} MiB"
                )


if __name__ == "__main__":
    main()
