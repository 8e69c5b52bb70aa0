"""Server-side latency of the app per slider change, on a 96³ case (prints one JSON object).

A session is built exactly as ``panel serve app/main.py`` builds it (state,
widgets, pyvista plotter, Bokeh document); then each parameter is moved and
the time until every synchronous view update has finished is measured. Moves
to settings already computed (the cache is warm) are reported as medians;
the first computation of a new model / k-shell / squeeze value is reported
separately as ``cold_s``. Besides wall-clock times, the process CPU time of
each warm move is reported (``warm_median_cpu_s``): on a machine shared with
other jobs it is the better estimate of the time on an idle machine.

The case is a bundled reference case (``--case``, default: the first in
``assets/data``). When its grid is not ``--grid``³, its DFT ELF is resampled
to that grid with periodic cubic interpolation (for timing only; the
resampled field is not written anywhere).

Usage::

    PYTHONPATH=. python benchmarks/app_latency.py [--case assets/data/X.nc] [--grid 96] [--repeats 5]

(run from the repository root: the app's package ``app`` is imported from there).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _case(path: str | None, grid: int):
    import numpy as np

    from app.pipeline import bundled_cases
    from elfcore.grid import case_atoms, case_field, grid_points_frac, interpolate, make_case
    from elfcore.io import read_case

    if path is None:
        cases = bundled_cases()
        if not cases:
            raise SystemExit("no bundled case in assets/data; give --case")
        path = str(cases[0])
    ds = read_case(path)
    atoms = case_atoms(ds)
    ref = case_field(ds, "elf_ref")
    shape = (grid, grid, grid)
    resampled = tuple(ref.shape) != shape
    values = ref.values
    if resampled:
        values = interpolate(ref, grid_points_frac(shape), order=3, frac=True).reshape(shape)
        values = np.clip(values, 0.0, 1.0)
    attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, (int, float, str))}
    return make_case(atoms, {"elf_ref": values}, attrs=attrs), Path(path).name, tuple(ref.shape), resampled


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help="netCDF case (default: first bundled case)")
    parser.add_argument("--grid", type=int, default=96, help="grid points per axis (default 96)")
    parser.add_argument("--repeats", type=int, default=5, help="warm moves per parameter (default 5)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import panel as pn
    import torch
    from bokeh.document import Document

    from app.main import build_session
    from app.pipeline import ElfcoreEngine, Pipeline
    from app.state import AppState
    from elfcore.device import resolve

    ds, name, ref_shape, resampled = _case(args.case, args.grid)
    pipe = Pipeline(engine=ElfcoreEngine(device=args.device), data_dir=ROOT / "nonexistent")
    info = pipe.add_case(ds, label=name, key="bench:" + name, pressure_gpa=ds.attrs.get("pressure_gpa"))
    t0 = time.perf_counter()
    state = AppState(pipeline=pipe)
    state.case = info.key
    state.fields()
    cold_first_prediction = time.perf_counter() - t0
    t0 = time.perf_counter()
    session = build_session(state)
    session.template.server_doc(Document())
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state.metrics()
    metrics_s = time.perf_counter() - t0

    cpu: dict[str, list[float]] = {}

    def timed(**values) -> float:
        t, c = time.perf_counter(), time.process_time()
        state.param.update(**values)
        timed.last_cpu = time.process_time() - c
        return time.perf_counter() - t

    cold: dict[str, float] = {}
    warm: dict[str, list[float]] = {}

    def sweep(name: str, values: list, reset=None):
        times, cpus = [], []
        for i in range(args.repeats):
            times.append(timed(**{name: values[i % len(values)]}))
            cpus.append(timed.last_cpu)
        warm[name] = times
        cpu[name] = cpus
        if reset is not None:
            timed(**{name: reset})

    # cold: first computation of settings not yet cached
    r_cuts, l_maxs = list(state.param.r_cut.objects), list(state.param.l_max.objects)
    base_r, base_l = state.r_cut, state.l_max
    cold["n_shells"] = timed(n_shells=3)
    other_r = next((r for r in r_cuts if r != base_r), None)
    if other_r is not None:
        cold["r_cut"] = timed(r_cut=other_r)
        timed(r_cut=base_r)
    other_l = next((l for l in l_maxs if l != base_l), None)
    if other_l is not None:
        cold["l_max"] = timed(l_max=other_l)
        timed(l_max=base_l)
    cold["squeeze"] = timed(squeeze=0.9)
    timed(squeeze=1.0)
    state.n_shells = 2
    timed(n_shells=3)

    # warm: every slider, values cycling over cached settings
    sweep("iso", [0.6, 0.7, 0.8, 0.65, 0.75])
    timed(show_residual=True)
    sweep("residual_iso", [0.05, 0.1, 0.15])
    sweep("slice_position", [0.1, 0.3, 0.5, 0.7, 0.9])
    sweep("slice_mode", ["a", "b", "c", "atoms"], reset="c")
    sweep("n_shells", [2, 3])
    sweep("view_field", ["reference", "corrected", "prediction"], reset="prediction")
    sweep("line_atom_2", [a for a in state.param.line_atom_2.objects[1:4]])
    if other_r is not None:
        sweep("r_cut", [other_r, base_r], reset=base_r)
    if other_l is not None:
        sweep("l_max", [other_l, base_l], reset=base_l)
    sweep("squeeze", [0.9, 1.0], reset=1.0)

    fs = state.fields()
    out = {
        "case": name,
        "atoms": len(fs.atoms),
        "grid": list(fs.prediction.shape),
        "reference_grid": list(ref_shape),
        "reference_resampled": resampled,
        "device": str(resolve(args.device)),
        "torch_threads": torch.get_num_threads(),
        "panel": pn.__version__,
        "first_prediction_s": round(cold_first_prediction, 3),
        "build_session_s": round(build_s, 3),
        "metrics_and_topology_s": round(metrics_s, 3),
        "cold_s": {k: round(v, 3) for k, v in cold.items()},
        "warm_median_s": {k: round(statistics.median(v), 4) for k, v in warm.items()},
        "warm_max_s": {k: round(max(v), 4) for k, v in warm.items()},
        "warm_median_cpu_s": {k: round(statistics.median(v), 4) for k, v in cpu.items()},
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    out["warm_worst_median_s"] = max(out["warm_median_s"].values())
    out["warm_worst_median_cpu_s"] = max(out["warm_median_cpu_s"].values())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
