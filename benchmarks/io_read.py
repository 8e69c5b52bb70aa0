"""Time ``elfcore.io.read_field`` on generated N³ ELFCAR, CHGCAR, cube, XSF and netCDF files.

Usage: ``python benchmarks/io_read.py [--n 192] [--repeat 3] [--formats elfcar,cube]``.
Prints one JSON object: per format the file size (MB), the write time, and the
best-of-``repeat`` read time in seconds, both wall clock (``read_s``) and CPU
time of this process (``read_cpu_s``, less sensitive to other load on the
machine), plus the 1-minute load average at the start.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from elfcore.grid import make_field
from elfcore.io import read_field, write_field

FILES = {"elfcar": "ELFCAR", "chgcar": "CHGCAR", "cube": "elf.cube", "xsf": "elf.xsf", "netcdf": "elf.nc"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=192, help="grid points per axis")
    parser.add_argument("--repeat", type=int, default=3, help="reads per format (best is reported)")
    parser.add_argument("--formats", default="elfcar,cube", help=f"comma list of {','.join(FILES)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    cell = np.diag([6.0, 6.0, 6.0])
    positions = rng.random((64, 3)) * 6.0
    values = rng.random((args.n,) * 3)
    results = {}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            name = "rho" if fmt == "chgcar" else "elf"
            field = make_field(values, cell, positions, name=name)
            path = os.path.join(tmp, FILES[fmt])
            t0 = time.perf_counter()
            write_field(field, path)
            t_write = time.perf_counter() - t0
            times, cpu = [], []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                out = read_field(path)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            if out.shape != field.shape:
                raise RuntimeError(f"{fmt}: read shape {out.shape}, wrote {field.shape}")
            results[fmt] = {
                "size_mb": round(os.path.getsize(path) / 1e6, 1),
                "write_s": round(t_write, 2),
                "read_s": round(min(times), 2),
                "read_s_all": [round(t, 2) for t in times],
                "read_cpu_s": round(min(cpu), 2),
            }
            os.remove(path)
    print(json.dumps({"n": args.n, "machine": platform.machine(), "cpus": os.cpu_count(),
                      "load_avg_1min": round(load, 2), "results": results}))


if __name__ == "__main__":
    main()
