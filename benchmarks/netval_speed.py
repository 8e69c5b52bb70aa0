"""Speed of the networking value φ on a 192³ periodic field (prints one JSON object).

The field is a smooth Gaussian random field (random Fourier modes with a Gaussian
spectrum, correlation length ≈ 0.6 Å in a 10 Å cube) mapped to (0, 1) by a
sigmoid, so its superlevel sets percolate at an intermediate value like an ELF.

    .venv/bin/python benchmarks/netval_speed.py [--n 192] [--repeat 3] [--seed 0]

Timings are wall-clock and process CPU seconds of the best of ``--repeat`` runs,
after one warm-up call (numba compilation is cached on disk).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def smooth_field(n: int, length: float, corr: float, seed: int) -> np.ndarray:
    """Periodic Gaussian random field (n, n, n) in (0, 1), float32."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, n, n))
    k = np.fft.fftfreq(n, d=length / n) * 2 * np.pi
    kx, ky, kz = np.meshgrid(k, k, k[: n // 2 + 1], indexing="ij")
    filt = np.exp(-0.5 * (kx**2 + ky**2 + kz**2) * corr**2)
    g = np.fft.irfftn(np.fft.rfftn(noise) * filt, s=(n, n, n), axes=(0, 1, 2))
    g /= g.std()
    return (1.0 / (1.0 + np.exp(-2.0 * g))).astype(np.float32)


def main() -> None:
    from elfcore.grid import make_field
    from elfcore.topology import TopologySettings, merge_tree, percolation_thresholds

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=192)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-full", action="store_true", help="do not time the full merge-tree sweep")
    args = p.parse_args()

    length = 10.0
    field = make_field(smooth_field(args.n, length, 0.6, args.seed), np.eye(3) * length)
    settings = TopologySettings()
    percolation_thresholds(make_field(field.values[:24, :24, :24], np.eye(3)), settings)  # warm-up / compile

    def timed(fn):
        best = None
        for _ in range(args.repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            if best is None or w < best[0]:
                best = (w, c, out)
        return best

    res = {"n": args.n, "grid": [args.n] * 3, "machine": platform.processor() or platform.machine()}
    w, c, out = timed(lambda: percolation_thresholds(field, settings, dims=(3,)))
    res.update(phi=out.values[3], phi_grid=out.grid_values[3], phi_wall_s=round(w, 3), phi_cpu_s=round(c, 3))
    w, c, out = timed(lambda: percolation_thresholds(field, settings))
    res.update(
        percolation={k: out.values[k] for k in (1, 2, 3)}, percolation_wall_s=round(w, 3), percolation_cpu_s=round(c, 3)
    )
    if not args.skip_full:
        w, c, out = timed(lambda: merge_tree(field, settings))
        res.update(
            full_sweep_phi=out.percolation.values[3],
            full_sweep_voxels=out.n_voxels_swept,
            full_sweep_wall_s=round(w, 3),
            full_sweep_cpu_s=round(c, 3),
        )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
