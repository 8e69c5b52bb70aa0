"""Accuracy of the grid-point SOAP descriptor; prints one JSON object.

* ``dscribe``: elfcore's direct path (``r_include = dscribe_r_include``) vs DScribe
  ``SOAP(species=["H"], rbf="gto", periodic=True).create(atoms, centers=points)``.
* ``fft_vs_direct``: full-grid reciprocal-space path vs direct neighbour sum (default
  ``r_include``) at random grid points, float64 and float32.
* ``dscribe_truncation``: how much DScribe's atom cutoff changes the descriptor
  (direct path at ``dscribe_r_include`` ± 0.01 Å vs the untruncated sum).

Errors are per feature: max |a − b| / max |b| over points, then the max over features.
Usage: ``python benchmarks/descriptor_accuracy.py``.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch
from ase import Atoms


def _relerr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.abs(a - b).max(0) / np.maximum(np.abs(b).max(0), 1e-300)).max())


def main() -> int:
    from elfcore.descriptor import (DescriptorSettings, compute_descriptor, compute_grid_descriptor,
                                    dscribe_r_include)
    from elfcore.grid import grid_points_frac
    from elfcore.reproduce.bench import random_hydrogen

    rng = np.random.default_rng(7)
    cell = np.array([[4.0, 0.3, 0.1], [1.2, 3.8, -0.4], [0.5, 0.9, 4.3]])
    small = Atoms("H12", positions=rng.random((12, 3)) @ cell, cell=cell, pbc=True)
    out: dict = {"dscribe": [], "fft_vs_direct": [], "dscribe_truncation": []}
    cases = [DescriptorSettings(), DescriptorSettings(r_cut=2.5, n_radial=6, l_max=4, sigma=0.4),
             DescriptorSettings(r_cut=4.0, n_radial=8, l_max=3, sigma=0.7)]
    try:
        from dscribe.descriptors import SOAP
    except ImportError:
        SOAP = None
    pts = rng.random((50, 3)) @ cell
    for s in cases:
        if SOAP is not None:
            ref = SOAP(species=["H"], r_cut=s.r_cut, n_max=s.n_radial, l_max=s.l_max, sigma=s.sigma, rbf="gto",
                       periodic=True).create(small, centers=pts)
            mine = compute_descriptor(small, pts, s, device="cpu", dtype=torch.float64,
                                      r_include=dscribe_r_include(s)).numpy()
            out["dscribe"].append({"settings": s.to_dict(), "max_rel_err": _relerr(mine, ref)})
        full = compute_descriptor(small, pts, s, device="cpu", dtype=torch.float64).numpy()
        jumps = [_relerr(compute_descriptor(small, pts, s, device="cpu", dtype=torch.float64,
                                            r_include=dscribe_r_include(s) + d).numpy(), full)
                 for d in (-0.01, 0.01)]
        out["dscribe_truncation"].append({"settings": s.to_dict(), "max_rel_change": max(jumps)})
    for n_atoms, shape in ((64, (40, 40, 40)), (500, (48, 48, 48))):
        atoms = random_hydrogen(n_atoms, seed=3)
        idx = rng.choice(int(np.prod(shape)), size=200, replace=False)
        s = DescriptorSettings()
        direct = compute_descriptor(atoms, grid_points_frac(shape)[idx] @ atoms.cell[:], s, device="cpu",
                                    dtype=torch.float64).numpy()
        row = {"atoms": n_atoms, "grid": list(shape)}
        for name, dt in (("float64", torch.float64), ("float32", torch.float32)):
            fft = compute_grid_descriptor(atoms, shape, s, device="cpu", dtype=dt)[idx].numpy()
            row[f"max_rel_err_{name}"] = _relerr(fft, direct)
        out["fft_vs_direct"].append(row)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
