"""Cold stamp-picture renders: what the first request for each stamp count pays.

    .venv/bin/python benchmarks/bench_images.py [--rounds 3]

For each sample template and picture (Apple strip @1x/@2x/@3x, Google hero) the image cache is
cleared, then every stamp count 0..M is rendered once in order, as a fleet's first requests
would: the first count pays for anything drawn once per template, the others only for their
own grid. The table shows the median milliseconds of the first count, of the other counts, and
of a warm (cached) call, over ``--rounds`` rounds. Run it against the baseline for a before/after
figure: ``PYTHONPATH=/work/baseline/src .venv/bin/python benchmarks/bench_images.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from passkit_stamps import images
from passkit_stamps.model import CardTemplate

ROOT = Path(__file__).resolve().parent.parent

PICTURES: dict[str, Callable[[CardTemplate, int], bytes]] = {
    "strip@1x": lambda t, n: images.apple_strip(t, n, 1),
    "strip@2x": lambda t, n: images.apple_strip(t, n, 2),
    "strip@3x": lambda t, n: images.apple_strip(t, n, 3),
    "hero": images.google_hero,
}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{'template':10} {'picture':9} {'first ms':>8} {'other ms':>8} {'warm ms':>8} {'bytes':>7}"
    )
    for name in ("coffee", "salon"):
        template = CardTemplate.load(ROOT / "templates" / name)
        for kind, render in PICTURES.items():
            firsts, others, warms = [], [], []
            size = 0
            for _ in range(args.rounds):
                images.clear_cache()
                for n in range(template.stamps_required + 1):
                    start = time.perf_counter()
                    data = render(template, n)
                    elapsed = time.perf_counter() - start
                    (firsts if n == 0 else others).append(elapsed)
                    size = max(size, len(data))
                start = time.perf_counter()
                render(template, 1)
                warms.append(time.perf_counter() - start)
            print(
                f"{name:10} {kind:9} {ms(statistics.median(firsts))} "
                f"{ms(statistics.median(others))} {ms(statistics.median(warms))} {size:7}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
