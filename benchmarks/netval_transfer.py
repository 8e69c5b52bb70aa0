"""Networking-value transfer to random crystals: fluid-only training vs. fluid + crystals (2-fold cross-validation).

Baseline row (the paper's protocol): an ensemble trained on the three fluid training
snapshots predicts every random crystal (atomic ``cubic_sg*``/``hexagonal_sg*`` and, when
built, molecular ``*_h2_sg*``); φ of the predicted and DFT fields are compared per crystal
family. Variant: the atomic crystals of each family are split into two halves
(alternating in space-group order); an ensemble trained on the fluid snapshots plus
one half predicts the other half, and vice versa, so every crystal is scored by a
model that never saw it. Second variant (when built): an ensemble trained on the fluid
snapshots plus the separate atomic training crystals (other seeds: ``*_train_sg*`` = round 1,
``*_train2_sg*`` = round 2, both 8/12-atom cells; ``*_train3_sg*``, ``*_train4_sg*`` = rounds 3–4,
16/24-atom cells like the test set) predicts every test crystal: round 1, rounds 1–2, every round.
All rows use the same training settings; ``--rows`` runs a subset.

    .venv/bin/python benchmarks/netval_transfer.py --out /tmp/transfer [--epochs 32 --voxels 25000 --ensemble 3 --rows …]

Prints a JSON object (per-case φ and per-family MAE / RMSE / R²) and a Markdown table.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "assets", "data")
FLUID_TRAIN = ["fluid_p076_t0200", "fluid_p115_t0200", "fluid_p138_t0200"]
ROWS = ("baseline", "crossval", "train_crystals_r1", "train_crystals_r12", "train_crystals")


def _crystal_folds(data: str) -> tuple[list[str], list[str]]:
    folds: tuple[list[str], list[str]] = ([], [])
    for fam in ("cubic", "hexagonal"):
        names = sorted(glob.glob(os.path.join(data, f"{fam}_sg*.nc")))
        if len(names) < 2:
            raise SystemExit(f"need at least 2 {fam} crystals in {data}")
        for i, path in enumerate(names):
            folds[i % 2].append(path)
    return folds


def _run(cmd: list[str]) -> str:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _training_sets(data: str) -> list[tuple[str, list[str]]]:
    """The training-crystal sets by round: round 1 (``*_train_sg*``), rounds 1–2 (the
    small 8/12-atom cells), and every round (rounds 3–4 add the test set's 16/24-atom
    cells). Sets that add nothing to the previous one are dropped."""
    def rounds(*names):
        return sorted(f for n in names for f in glob.glob(os.path.join(data, f"*_{n}_sg*.nc")))

    every = sorted(glob.glob(os.path.join(data, "*_train*_sg*.nc")))
    sets, seen = [], 0
    for key, files in (("train_crystals_r1", rounds("train")), ("train_crystals_r12", rounds("train", "train2")),
                       ("train_crystals", every)):
        if len(files) > seen:
            sets.append((key, files))
            seen = len(files)
    return sets


def _train(out: str, cases: list[str], args) -> float:
    t0 = time.perf_counter()
    _run(
        [
            args.elfcore, "train", *cases, "--out", out, "--device", args.device,
            "--epochs", str(args.epochs), "--voxels", str(args.voxels),
            "--ensemble", str(args.ensemble), "--seed", str(args.seed),
        ]
    )
    return time.perf_counter() - t0


def _score(model: str, cases: list[str], args) -> dict:
    out = _run([sys.executable, os.path.join(HERE, "netval_accuracy.py"), *cases, "--model", model,
                "--device", args.device])
    return json.loads(out.strip().splitlines()[-1])


def _family_rows(cases: list[dict]) -> dict:
    from elfcore.topology import phi_metrics

    fams = {}
    for fam in sorted({c["family"] for c in cases}):
        sel = [c for c in cases if c["family"] == fam]
        fams[fam] = phi_metrics([c["phi_ref"] for c in sel], [c["phi_pred"] for c in sel])
    return fams


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="work folder for the trained models")
    p.add_argument("--data", default=DATA)
    p.add_argument("--epochs", type=int, default=32)
    p.add_argument("--voxels", type=int, default=25000)
    p.add_argument("--ensemble", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS),
                   help="training sets to run (default: all)")
    p.add_argument("--elfcore", default=os.path.join(os.path.dirname(sys.executable), "elfcore"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    fluid = [os.path.join(args.data, f"{n}.nc") for n in FLUID_TRAIN]
    missing = [f for f in fluid if not os.path.exists(f)]
    if missing:
        raise SystemExit(f"missing fluid training cases: {missing}")
    half = _crystal_folds(args.data)
    molecular = sorted(glob.glob(os.path.join(args.data, "*_h2_sg*.nc")))
    res: dict = {"settings": vars(args), "fluid_train": FLUID_TRAIN, "folds": [[os.path.basename(f) for f in h]
                                                                                for h in half]}
    res["train_seconds"] = {}
    if "baseline" in args.rows:
        base = os.path.join(args.out, "fluid.safetensors")
        res["train_seconds"]["fluid"] = round(_train(base, fluid, args), 1)
        baseline = _score(base, half[0] + half[1] + molecular, args)
        res["baseline"] = {"cases": baseline["cases"], "families": baseline["families"]}
    if "crossval" in args.rows:
        cv_cases = []
        for k in (0, 1):
            model = os.path.join(args.out, f"fluid_fold{k}.safetensors")
            res["train_seconds"][f"fluid+fold{k}"] = round(_train(model, fluid + half[k], args), 1)
            cv_cases += _score(model, half[1 - k], args)["cases"]
        res["crossval"] = {"cases": cv_cases, "families": _family_rows(cv_cases)}
    for key, extra in _training_sets(args.data):
        if key not in args.rows:
            continue
        model = os.path.join(args.out, f"fluid_{key}.safetensors")
        res["train_seconds"][key] = round(_train(model, fluid + extra, args), 1)
        scored = _score(model, half[0] + half[1] + molecular, args)
        res[key] = {"cases": scored["cases"], "families": scored["families"],
                    "crystals": [os.path.basename(f) for f in extra]}
    print(json.dumps(res))
    print("\n| training set | family | n | φ MAE | φ RMSE | φ R² |", file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)

    def num(x):
        return "–" if x is None else f"{x:.4f}" if abs(x) < 10 else f"{x:.3g}"

    for label, key in (("3 fluid snapshots (paper protocol)", "baseline"),
                       ("3 fluid snapshots + other half of the atomic crystals (2-fold CV)", "crossval"),
                       *((f"3 fluid snapshots + {len(res[k]['crystals'])} atomic training crystals ({k})", k)
                         for k in ROWS[2:] if k in res)):
        for fam, m in res.get(key, {}).get("families", {}).items():
            print(f"| {label} | {fam} | {m.get('n')} | {num(m.get('mae'))} | {num(m.get('rmse'))} |"
                  f" {num(m.get('r2'))} |", file=sys.stderr)


if __name__ == "__main__":
    main()
