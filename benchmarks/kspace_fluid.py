"""k-space analysis of a model's residual on the fluid reference snapshots (issue: k-correction targets).

For every fluid case in DATA, runs ``elfcore kcorrect MODEL CASE --shells 3 --scan --analysis --sample 0.01
--json`` and prints one markdown table row per case plus the mean per MD (target pressure):
cell, first shell |k|, residual power below 1 Å⁻¹, power-weighted mean |k|, correlation length,
R² before, oracle R² with 1/2/3/8 shells, sparse-fit R² from 1 % of the voxels (3 shells).

    OMP_NUM_THREADS=1 python benchmarks/kspace_fluid.py --model zoo:rcut=3.0,lmax=2 assets/data/fluid_*.nc
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import xarray as xr


def run_case(model: str, path: Path, device: str) -> dict:
    cmd = [sys.executable, "-m", "elfcore.cli", "kcorrect", model, str(path), "--shells", "3", "--scan",
           "--analysis", "--sample", "0.01", "--device", device, "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+", type=Path, help="fluid case files")
    ap.add_argument("--model", default="zoo:rcut=3.0,lmax=2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write all results to this JSON file")
    args = ap.parse_args(argv)

    rows, by_target = [], defaultdict(list)
    for path in sorted(args.data):
        with xr.open_dataset(path) as ds:
            attrs = dict(ds.attrs)
        if attrs.get("family") != "fluid":
            continue
        d = run_case(args.model, path, args.device)
        scan = dict(zip(d["shell_scan"]["n_shells"], d["shell_scan"]["r2_after"]))
        row = {
            "case": path.stem, "role": attrs.get("role"), "target": float(attrs.get("target_pressure_gpa", np.nan)),
            "pressure": float(attrs.get("pressure_gpa", np.nan)), "L": d["cell_lengths"][0],
            "k1": d["k_first_shell"], "low_k": d["residual"]["low_k_fraction"],
            "k_mean": d["residual"]["k_centroid"], "xi": d["residual"]["correlation_length"],
            "r2_before": d["r2_before"], "oracle": [scan[1], scan[2], scan[3], scan[8]],
            "sparse": d["r2_after"], "raw": d,
        }
        rows.append(row)
        by_target[row["target"]].append(row)
        print(f"done {path.stem}", file=sys.stderr, flush=True)
    print("| case | role | P (GPa) | L (Å) | k₁ (Å⁻¹) | Δ power ≤ 1 Å⁻¹ | k̄ (Å⁻¹) | ξ (Å) | R² before | "
          "oracle R² 1 / 2 / 3 / 8 shells | sparse 1 %, 3 shells |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o = " / ".join(f"{v:.4f}" for v in r["oracle"])
        print(f"| {r['case']} | {r['role']} | {r['pressure']:.1f} | {r['L']:.2f} | {r['k1']:.2f} | "
              f"{100 * r['low_k']:.1f} % | {r['k_mean']:.1f} | {r['xi']:.2f} | {r['r2_before']:.4f} | {o} | "
              f"{r['sparse']:.4f} |")
    print()
    print("| MD (target GPa) | snapshots | k̄ (Å⁻¹) | ξ (Å) | R² before | oracle R², 3 shells | sparse 1 % |")
    print("|---|---|---|---|---|---|---|")
    for t in sorted(by_target):
        rs = [r for r in by_target[t] if r["role"] == "test"] or by_target[t]
        m = lambda k: np.mean([r[k] for r in rs])  # noqa: E731
        print(f"| {t:g} | {len(rs)} ({rs[0]['role']}) | {m('k_mean'):.2f} | {m('xi'):.3f} | {m('r2_before'):.4f} | "
              f"{np.mean([r['oracle'][2] for r in rs]):.4f} | {m('sparse'):.4f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
