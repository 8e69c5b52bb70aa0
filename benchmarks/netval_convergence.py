"""Convergence of the networking value with grid spacing (prints one JSON object).

Takes one fine periodic ELF field (any file elfcore reads), samples its periodic
cubic B-spline interpolant on coarser grids (the same function, sampled more
coarsely) and reports for each grid the percolation thresholds

* ``voxel``: voxel value of the sweep on the grid as given (no refinement),
* ``refined``: the same sweep, threshold moved to the bond critical point of the
  interpolant next to the critical voxel,
* ``auto``: the default (automatic spline upsampling, then refinement),

against the default on the fine field itself.

    .venv/bin/python benchmarks/netval_convergence.py FILE [--fractions 0.35 0.45 0.6 0.8 1.0]
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    from elfcore.grid import field_cell, interpolate, make_field
    from elfcore.io import read_field
    from elfcore.topology import TopologySettings, percolation_thresholds

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.35, 0.45, 0.6, 0.8, 1.0],
                   help="coarse grid sizes as fractions of the file's grid")
    args = p.parse_args()

    fine = read_field(args.file)
    cell = field_cell(fine)
    ref = percolation_thresholds(fine)
    rows = []
    for frac in args.fractions:
        shape = tuple(max(4, int(round(n * frac))) for n in fine.shape)
        if shape == fine.shape:
            coarse = fine
        else:
            pts = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1)
            coarse = make_field(interpolate(fine, pts, frac=True, order=3), cell,
                                fine.attrs["positions"], fine.attrs["numbers"])
        spacing = float(np.max(np.linalg.norm(cell, axis=1) / np.asarray(shape)))
        row = {"grid": list(shape), "spacing_A": round(spacing, 4)}
        for name, s in (("voxel", TopologySettings(upsample=1, refine=False)),
                        ("refined", TopologySettings(upsample=1)),
                        ("auto", TopologySettings())):
            r = percolation_thresholds(coarse, s)
            row[name] = {str(k): r.values[k] for k in (1, 2, 3)}
            if name == "auto":
                row["upsample"] = r.upsample
        row["error_phi"] = {n: (None if row[n]["3"] is None else row[n]["3"] - ref.values[3])
                            for n in ("voxel", "refined", "auto")}
        rows.append(row)
    print(json.dumps({"file": args.file, "fine_grid": list(fine.shape),
                      "reference": {str(k): ref.values[k] for k in (1, 2, 3)}, "rows": rows}))


if __name__ == "__main__":
    main()
