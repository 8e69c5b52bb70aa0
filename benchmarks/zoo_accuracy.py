"""Accuracy of every shipped zoo entry on independent snapshots (cases no zoo model was trained on).

For each (r_cut, l_max) entry present in the zoo folder, score it with
:func:`elfcore.train.evaluate_many` on the given cases (``--voxels`` random voxels each, one seed
for all entries, so every entry sees the same voxels) and print a markdown table of the mean
MAE / RMSE / R² over the cases, best entry (highest mean R²) first; ``--json`` writes every number.

    OMP_NUM_THREADS=1 python benchmarks/zoo_accuracy.py assets/data/fluid_p*_t0[2-4]50.nc \\
        assets/data/fluid_p*_t0300.nc assets/data/fluid_p*_t0400.nc --voxels 50000 --json zoo_accuracy.json

Cases with ``role = train`` that a zoo model was trained on are refused (read from the models'
headers), so the table is about data the models never saw.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _trained_on(entries) -> set[str]:
    from elfcore.models import read_header
    from elfcore.zoo import default_zoo_dir

    names = set()
    for row in entries:
        header = read_header(Path(default_zoo_dir()) / row["file"])
        names |= {c.get("name") for c in header.get("training", {}).get("training_cases", [])}
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="+", help="netCDF case files (independent of the zoo's training data)")
    ap.add_argument("--voxels", type=int, default=50_000, help="random voxels per case (default 50000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--entries", default=None, help="only these entries, e.g. '3.0:2,4.0:4'")
    ap.add_argument("--json", default=None, help="write every number here")
    args = ap.parse_args(argv)

    import torch

    from elfcore.commands.train import load_data
    from elfcore.train import evaluate_many
    from elfcore.zoo import load_zoo_model, zoo_entries

    torch.set_num_threads(1)
    entries = [r for r in zoo_entries() if r.get("present")]
    if args.entries:
        wanted = {(float(r), int(l)) for r, l in (e.split(":") for e in args.entries.split(","))}
        entries = [r for r in entries if (float(r["r_cut"]), int(r["l_max"])) in wanted]
    if not entries:
        print("no zoo entry to score", file=sys.stderr)
        return 1
    data = load_data(args.cases)
    seen = _trained_on(entries) & {name for name, _ in data}
    if seen:
        print(f"refused: the zoo was trained on {sorted(seen)}", file=sys.stderr)
        return 1
    rows = []
    for row in entries:
        r_cut, l_max = float(row["r_cut"]), int(row["l_max"])
        t0 = time.process_time()
        report = evaluate_many(load_zoo_model(r_cut, l_max), data, n_voxels=args.voxels, seed=args.seed,
                               device="cpu")
        per_case = report["cases"]
        rows.append({
            "r_cut": r_cut, "l_max": l_max, "epochs": row.get("epochs"),
            "mae": float(np.mean([c["mae"] for c in per_case])),
            "rmse": float(np.mean([c["rmse"] for c in per_case])),
            "r2": float(np.mean([c["r2"] for c in per_case])),
            "r2_min": float(np.min([c["r2"] for c in per_case])),
            "cpu_s": time.process_time() - t0,
            "cases": per_case,
        })
        print(f"r_cut {r_cut} l_max {l_max}: R² {rows[-1]['r2']:.4f} MAE {rows[-1]['mae']:.4f} "
              f"({rows[-1]['cpu_s']:.0f} s CPU)", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: -r["r2"])
    print(f"| r_cut (Å) | l_max | epochs | MAE | RMSE | R² (mean of {len(data)}) | R² (worst case) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['r_cut']:.1f} | {r['l_max']} | {r['epochs']} | {r['mae']:.4f} | {r['rmse']:.4f} | "
              f"{r['r2']:.4f} | {r['r2_min']:.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": [n for n, _ in data], "voxels": args.voxels,
                                               "seed": args.seed, "entries": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
