"""Throughput of `elfcore screen` on a small 64-atom trajectory (prints one JSON object).

The trajectory is ``--frames`` copies of the shipped fluid case ``fluid_p076_t0250``
(64 H, 5.8 Å cube) with Gaussian jitter of 0.03 Å on every position, written as
extxyz. It is screened into a fresh SQLite database once per worker count in
``--workers`` (a new LocalCluster each time, processes, one thread each), and one
frame is also run in this process the way ``elfcore predict`` + ``elfcore netval``
would (predict_field, then topology_summary without critical points) for the cost
per frame of the plain pipeline.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/screen.py [--frames 24] [--spacing 0.08] [--workers 1,2]

``frames_per_s`` counts frames computed per wall second after the cluster is up
and the model is on the workers (``startup_s``); ``task_s_median`` is the median
wall time of one frame's task on its worker (prediction + topology, from the rows).
Each worker's first frame also loads the compiled topology kernels (~1.3 s), so
short runs understate the rate a long trajectory gets: the default of 24 frames
amortises it over 12 frames per worker.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

CASE = Path(__file__).resolve().parent.parent / "assets" / "data" / "fluid_p076_t0250.nc"


def write_trajectory(path: Path, n: int, seed: int = 0) -> None:
    from ase.io import write

    import elfcore
    from elfcore.grid import case_atoms

    base = case_atoms(elfcore.read_case(CASE))
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        a = base.copy()
        a.positions += rng.normal(scale=0.03, size=a.positions.shape)
        a.info["time_fs"] = float(i)
        frames.append(a)
    write(path, frames, format="extxyz")


def single_frame_cost(path: Path, model: str, spacing: float) -> dict:
    """predict_field + topology_summary(bcp=False) of frame 0 in this process (one torch thread), warm."""
    import torch
    from ase.io import read

    from elfcore.predict import predict_field
    from elfcore.topology import topology_summary
    from elfcore.zoo import resolve_model

    torch.set_num_threads(1)
    atoms = read(path, index=0)
    m = resolve_model(model)
    out = {}
    for _ in range(2):  # the first call loads numba's cache
        t0 = time.perf_counter()
        elf = predict_field(atoms, m, spacing=spacing, device="cpu", progress=False).elf
        t1 = time.perf_counter()
        topology_summary(elf, bcp=False)
        t2 = time.perf_counter()
        out = {"predict_s": round(t1 - t0, 3), "netval_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3)}
    return out


def main() -> None:
    from elfcore.screen import ScreenSettings, read_records, screen

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--spacing", type=float, default=0.08)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--model", default="zoo:rcut=3.0,lmax=2")
    args = p.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    result = {"frames": args.frames, "atoms": 64, "spacing": args.spacing, "model": args.model,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "load_avg_before": os.getloadavg()[0], "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        traj = Path(tmp) / "fluid.extxyz"
        write_trajectory(traj, args.frames)
        result["single_frame"] = single_frame_cost(traj, args.model, args.spacing)
        for n in counts:
            db = Path(tmp) / f"w{n}.db"
            s = screen([traj], db, model=args.model, settings=ScreenSettings(spacing=args.spacing, device="cpu"),
                       workers=n, progress=False)
            rows = read_records(db, status="ok")
            task = [r["seconds_predict"] + r["seconds_topology"] for r in rows]
            result["runs"][str(n)] = {
                "ok": s["ok"], "failed": s["failed"], "seconds": s["seconds"], "startup_s": s["startup_s"],
                "frames_per_s": s["frames_per_s"], "task_s_median": round(float(np.median(task)), 3),
                "grid": rows[0]["grid"] if rows else None,
            }
    runs = result["runs"]
    if "1" in runs and "2" in runs and runs["1"]["frames_per_s"]:
        result["speedup_2_vs_1"] = round(runs["2"]["frames_per_s"] / runs["1"]["frames_per_s"], 3)
    result["load_avg_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
