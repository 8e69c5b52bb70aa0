"""Critical-point counts of ELF fields: persistence census vs. Newton-refined spline points (Markdown table).

For each file: the census at persistence 0 (every critical cell of the grid) and at
``--min-persistence`` (default 0.01), each with its Morse sum, next to the counts of the
Newton-refined points on the tricubic spline (the bcp route's points), and the time of
the census.

    .venv/bin/python benchmarks/critical_census.py assets/data/*.nc [--min-persistence 0.01]
"""
from __future__ import annotations

import argparse
import os
import time


def _fmt(c: dict) -> str:
    from elfcore.topology.critical import morse_sum

    s = morse_sum(c)
    return f"{c['max']}, {c['bond']}, {c['ring']}, {c['cage']} ({f'{s:+d}' if s else '0'})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--min-persistence", type=float, default=0.01)
    p.add_argument("--field", default=None)
    args = p.parse_args()

    from elfcore.io import read_field
    from elfcore.topology import critical_census, critical_points

    print(f"| file | grid | all (persistence > 0) | persistence > {args.min_persistence:g} | spline (Newton) |"
          " census s |")
    print("|---|---|---|---|---|---|")
    for path in args.files:
        field = read_field(path, name=args.field)
        t0 = time.perf_counter()
        census = critical_census(field, args.min_persistence, refine=False)
        dt = time.perf_counter() - t0
        every = {k: v for k, v in census.diagram.counts(0.0).items() if k != "morse_sum"}
        spline = critical_points(field, link_bonds=False).counts
        grid = "×".join(str(n) for n in field.shape)
        print(f"| {os.path.basename(path)} | {grid} | {_fmt(every)} | {_fmt(census.counts)} | {_fmt(spline)} |"
              f" {dt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
