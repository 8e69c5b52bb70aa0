"""Effect of bfloat16 inference on R²; prints one JSON object.

Trains a paper-architecture MLP (width 128, 2 hidden layers, Huber δ = 0.03,
Adam) for a few epochs on the full grids of the first ``--train`` shipped cases
(assets/data/*.nc, fft-path descriptors), then predicts the held-out cases with
:func:`elfcore.predict.predict_field` in float32 and in bfloat16 and reports R²,
MAE and the largest difference between the two predictions. The model is a
quick one (it is the *change* of R² that is measured, not the model's quality).

Usage: ``python benchmarks/precision.py --epochs 10``
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np
import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join("assets", "data"))
    parser.add_argument("--train", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import xarray as xr

    from elfcore.descriptor import DescriptorSettings, compute_grid_descriptor
    from elfcore.grid import case_atoms
    from elfcore.predict import predict_field
    from elfcore.reproduce.bench import timing_model

    files = sorted(glob.glob(os.path.join(args.data, "*.nc")))
    if len(files) <= args.train:
        print(json.dumps({"error": f"need more than {args.train} cases in {args.data}"}))
        return 1
    settings = DescriptorSettings()
    cases = []
    for f in files:
        ds = xr.load_dataset(f)
        cases.append((os.path.basename(f), case_atoms(ds), np.asarray(ds["elf_ref"].values, np.float32)))
    x = torch.cat([compute_grid_descriptor(a, e.shape, settings, device="cpu") for _, a, e in cases[: args.train]])
    y = torch.cat([torch.as_tensor(e.reshape(-1)) for _, _, e in cases[: args.train]])
    model = timing_model(settings, seed=args.seed)
    model.set_normalization(x.mean(0), x.std(0))
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.HuberLoss(delta=0.03)
    model.train()
    for _ in range(args.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 512):
            idx = perm[i : i + 512]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    model.eval()
    rows = []
    for name, atoms, elf in cases[args.train :]:
        row = {"case": name, "voxels": int(elf.size)}
        preds = {}
        for precision in ("float32", "bfloat16"):
            p = predict_field(atoms, model, shape=elf.shape, device="cpu", precision=precision, progress=False).elf
            preds[precision] = p.values.astype(np.float64)
            err = preds[precision] - elf
            row[f"r2_{precision}"] = float(1 - np.sum(err**2) / np.sum((elf - elf.mean()) ** 2))
            row[f"mae_{precision}"] = float(np.mean(np.abs(err)))
        row["delta_r2"] = row["r2_bfloat16"] - row["r2_float32"]
        row["max_abs_diff"] = float(np.abs(preds["bfloat16"] - preds["float32"]).max())
        rows.append(row)
    print(json.dumps({"train_cases": [c[0] for c in cases[: args.train]], "train_voxels": int(len(x)),
                      "epochs": args.epochs, "cases": rows,
                      "max_abs_delta_r2": max(abs(r["delta_r2"]) for r in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
