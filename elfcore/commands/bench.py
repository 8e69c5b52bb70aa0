"""Time full-grid ELF prediction (descriptor + MLP) on a random dense-hydrogen structure.

Builds a random structure of ``--atoms`` H atoms at 2.7 Å³/atom (fixed seed),
predicts the ELF on a ``--grid``³ grid several times and reports the medians of
the descriptor and inference times, the peak memory and the device; in the same
run it times the naive path (direct neighbour sum per voxel + the same MLP) on a
voxel sample, so ``speedup`` is a ratio measured side by side. The MLP is the
paper's architecture, freshly initialised (timing does not depend on the
weights), unless ``--model`` names a trained one.
"""
from __future__ import annotations

import argparse
import logging

__all__ = ["add_arguments", "run", "render"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments and options."""
    parser.add_argument("--atoms", type=int, default=500, help="number of H atoms (default 500)")
    parser.add_argument("--grid", type=int, default=192, help="grid points per axis (default 192)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (default 3)")
    parser.add_argument("--naive-voxels", type=int, default=None,
                        help="voxels timed with the naive path (default 1000 on CPU, 20000 on CUDA)")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="precision of the MLP's matrix products (default float32)")
    parser.add_argument("--model", default=None, help="model file or zoo spec instead of a fresh MLP")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="structure / sample seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> dict:
    """Time prediction as the arguments say; the :func:`~elfcore.reproduce.bench.benchmark` dict."""
    import torch

    from ..errors import ElfcoreError
    from ..reproduce.bench import benchmark

    if args.threads is not None:
        if args.threads < 1:
            raise ElfcoreError(f"--threads {args.threads}; must be ≥ 1")
        torch.set_num_threads(args.threads)
    if args.atoms < 1 or args.grid < 1 or args.repeats < 1:
        raise ElfcoreError("--atoms, --grid and --repeats must be ≥ 1")
    model = None
    if args.model:
        from ..zoo import resolve_model

        model = resolve_model(args.model)
    log.info("benchmark: %d H atoms, %d³ grid, device %s", args.atoms, args.grid, args.device)
    return benchmark(args.atoms, args.grid, device=args.device, repeats=args.repeats,
                     naive_voxels=args.naive_voxels, model=model, precision=args.precision, seed=args.seed)


def render(result: dict, args: argparse.Namespace) -> str:
    """Device, structure, phase times, peak memory and the naive-path speed-up."""
    r = result
    return "\n".join([
        f"device        {r['device']} ({r['threads']} threads, load {r['load_avg'][0]:.1f})",
        f"structure     {r['atoms']} H atoms, grid {'×'.join(map(str, r['grid']))}",
        f"descriptor    {r['descriptor_s']:.3f} s",
        f"inference     {r['inference_s']:.3f} s ({r['precision']})",
        f"total         {r['total_s']:.3f} s (median of {r['repeats']}; cold {r['cold_total_s']:.3f} s)",
        f"peak memory   {r['peak_mem_gb']:.2f} GB",
        f"naive path    {r['naive_s_per_voxel'] * 1e6:.1f} µs/voxel → speed-up {r['speedup']:.0f}×",
    ])
