"""Cost of full-grid ELF prediction versus system size and grid size; prints one JSON object.

Three series, each timed with :func:`elfcore.reproduce.bench.benchmark` (median of
``--repeats`` after a warm-up; descriptor + MLP inference, no naive path):

``atoms``
    64 … 2000 H atoms at 2.7 Å³/atom on a grid of fixed spacing (``--spacing``,
    default 0.115 Å = 96³ for 500 atoms): the cost of a bigger system.
``atoms_fixed_grid``
    the same structures on one fixed grid (``--fixed-grid``, default 96³).
``voxels``
    500 atoms on 48³ … 192³ grids.

For each series the exponent b of ``total_s ∝ x^b`` is fitted by least squares in
log–log (x = atoms or voxels), also for the descriptor time alone, and the same
for the process CPU time (``*_cpu``: on a shared machine the wall time mostly
measures the other jobs). ``--transforms dense|fft`` forces the descriptor's
inverse transforms (default: chosen per axis by size) to compare the two.

Usage::

    python benchmarks/scaling.py --device auto --repeats 2 > scaling.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import numpy as np


def _fit(x, y) -> float:
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--atoms", default="64,128,250,500,1000,2000")
    parser.add_argument("--grids", default="48,64,96,128,160,192")
    parser.add_argument("--spacing", type=float, default=0.115, help="Å, atoms series")
    parser.add_argument("--fixed-grid", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--series", default="atoms,atoms_fixed_grid,voxels")
    parser.add_argument("--transforms", choices=("auto", "dense", "fft"), default="auto",
                        help="inverse transforms of the fft descriptor path: chosen per axis by size (auto), "
                             "or all dense DFT products, or all FFTs (to compare)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    import torch

    from elfcore.predict import grid_shape_for_spacing
    from elfcore.reproduce.bench import benchmark

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.transforms != "auto":
        from elfcore import descriptor

        descriptor._FFT_MIN_FREQS = (0, 0, 0) if args.transforms == "fft" else (10**9,) * 3
    atoms_list = [int(a) for a in args.atoms.split(",")]
    grids = [int(g) for g in args.grids.split(",")]
    wanted = set(args.series.split(","))
    out: dict = {"device": args.device, "repeats": args.repeats, "threads": torch.get_num_threads(),
                 "transforms": args.transforms,
                 "load_avg_start": os.getloadavg()[0], "series": {}}

    def run(n_atoms, shape):
        r = benchmark(n_atoms, shape, device=args.device, repeats=args.repeats, naive_voxels=0)
        logging.info("%5d atoms %s: total %.2f s (descriptor %.2f s)", n_atoms, shape, r["total_s"],
                     r["descriptor_s"])
        out["device"] = r["device"]
        return {k: r[k] for k in ("atoms", "grid", "voxels", "descriptor_s", "inference_s", "total_s",
                                  "descriptor_cpu_s", "total_cpu_s", "peak_mem_gb", "load_avg")}

    def series(name, points, xkey):
        rows = [run(n, shape) for n, shape in points]
        x = [r[xkey] for r in rows]
        out["series"][name] = {
            "x": xkey,
            "points": rows,
            "exponent_total": _fit(x, [r["total_s"] for r in rows]),
            "exponent_descriptor": _fit(x, [r["descriptor_s"] for r in rows]),
            "exponent_total_cpu": _fit(x, [r["total_cpu_s"] for r in rows]),
            "exponent_descriptor_cpu": _fit(x, [r["descriptor_cpu_s"] for r in rows]),
        }

    if "atoms" in wanted:
        pts = []
        for n in atoms_list:
            length = (n * 2.7) ** (1 / 3)
            pts.append((n, grid_shape_for_spacing(np.eye(3) * length, args.spacing)))
        series("atoms", pts, "atoms")
    if "atoms_fixed_grid" in wanted:
        series("atoms_fixed_grid", [(n, (args.fixed_grid,) * 3) for n in atoms_list], "atoms")
    if "voxels" in wanted:
        series("voxels", [(500, (g,) * 3) for g in grids], "voxels")
    out["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
