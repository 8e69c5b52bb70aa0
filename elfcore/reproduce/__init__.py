"""Regenerate the paper's evidence on elfcore's own data (``elfcore reproduce``).

From the shipped reference cases (``assets/data/*.nc``) and runs it makes itself,
:func:`run_reproduce` produces

* Table S1 analogue: ensemble mean ± stdev of MAE/RMSE/R² on the training
  snapshots, the independent snapshots and the random cubic/hexagonal crystals, plus
  the networking value φ per crystal family (:mod:`elfcore.topology`);
* Table S2 analogue: every independent MD snapshot, grouped by pressure;
* Figure S1 analogue: the 3D CNN (:mod:`elfcore.models.cnn`) — parity, error vs
  reference ELF, R² vs patch r_cut, CNN vs MLP residual;
* Figure S2 analogue: R² vs width, hidden layers, Huber δ, r_cut, n_radial, l_max;
* Figure S3 analogue: residual slices per pressure before/after the oracle
  k-correction (:mod:`elfcore.kspace`), −0.2…+0.2;
* large cells (fluid cells of ≥ 500 atoms, when shipped): Tables S1/S2 rows of the
  baseline and of a variant also trained on the large training cells, the k-space
  analysis of every large test cell and Figure S3 on one large cell per pressure;
* a markdown block (tables, figure links, a generated discussion) written between
  marker comments of ``docs/results.md`` and a ``reproduce.json`` with every number.

Each part runs on its own: if one fails (e.g. a module missing), the others still
run and the failure is reported in the block and the JSON.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import ElfcoreError
from ..jsonsafe import to_jsonable
from ..reference import PAPER_PRESSURES_GPA
from .settings import ReproduceSettings

__all__ = ["ReproduceSettings", "run_reproduce", "find_cases"]

log = logging.getLogger(__name__)


def find_cases(data_dir: str | os.PathLike) -> list[Path]:
    """The netCDF case files of a data directory, sorted by name."""
    paths = sorted(Path(p) for p in glob.glob(os.path.join(str(data_dir), "*.nc")))
    if not paths:
        raise ElfcoreError(f"no *.nc case files in {data_dir}")
    return paths


def _machine(device=None) -> str:
    n = torch.get_num_threads()
    text = (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{n} thread{'' if n == 1 else 's'}")
    if device is not None and torch.device(device).type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text


def run_reproduce(
    case_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    settings: ReproduceSettings | None = None,
    *,
    results_md: str | os.PathLike | None = None,
    mode: str = "full",
    command: str = "elfcore reproduce",
    device: str | torch.device = "auto",
    pressures: Sequence[float] | None = PAPER_PRESSURES_GPA,
) -> dict[str, Any]:
    """Run every part and write figures, ``reproduce.json`` and the markdown block.

    Parameters
    ----------
    case_paths : sequence of path-like
        Reference cases (netCDF case files with ``elf_ref`` and attrs ``family``,
        ``role``, ``pressure_gpa``, ``md_step``).
    out_dir : path-like
        Directory of the PNG figures and ``reproduce.json``.
    settings : ReproduceSettings, optional
        Sizes (default :meth:`ReproduceSettings.full`).
    results_md : path-like, optional
        Markdown file whose marked block is replaced; ``None`` writes only
        ``reproduce.md`` next to the figures.
    mode : str
        Label of the run (``"full"`` or ``"quick"``).
    command : str
        The command line recorded in the outputs.
    device : str or torch.device
        ``"auto"``: CUDA when available.
    pressures : sequence of float, optional
        Fluid MDs used (target pressures; default the paper's three, ``None`` every one),
        see :func:`elfcore.reproduce.runs.split_cases`.

    Returns
    -------
    dict
        The summary written to ``reproduce.json`` (all numbers, file names, errors).
    """
    from . import runs
    from ..device import resolve

    s = settings or ReproduceSettings.full()
    dev = resolve(device)
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = runs.load_cases(case_paths)
    split = runs.split_cases(cases, pressures)
    counts = {k: len(split[k]) for k in ("train", "test", "cubic", "hexagonal")}
    summary: dict[str, Any] = {
        "command": command,
        "mode": mode,
        "machine": _machine(dev),
        "settings": s.to_dict(),
        "n_cases": len(cases),
        "case_counts": counts,
        "cases": [c.describe() for c in cases],
        "notes": list(split["notes"]),
        "figures": [],
        "errors": {},
    }
    log.info("reproduce (%s): %d cases %s", mode, len(cases), counts)
    parts = _Parts(summary, out, results_md, t0)
    got = parts.run("baseline", lambda: runs.run_baseline(split, s, device=device))
    if got:
        summary["baseline"], base_arrays = got
        parts.flush()
        if base_arrays is not None:
            _run_model_parts(parts, split, s, base_arrays, out, device)
    _run_sweeps(parts, split, s, out, device)
    return write_outputs(summary, out, results_md, t0, finished=True)


class _Parts:
    """Runs the parts of a reproduction: a failing part is logged and recorded in
    ``summary["errors"]`` and the others go on; :meth:`flush` writes the outputs so far."""

    def __init__(self, summary: dict[str, Any], out: Path, results_md: str | os.PathLike | None, t0: float):
        self.summary, self.out, self.results_md, self.t0 = summary, out, results_md, t0

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None when it raises one of the errors a part may end with."""
        t = time.perf_counter()
        try:
            value = fn()
        except (ElfcoreError, ImportError, ValueError, RuntimeError, KeyError) as exc:
            log.error("part %s failed: %s", name, exc)
            self.summary["errors"][name] = f"{type(exc).__name__}: {exc}"
            return None
        log.info("part %s done in %.0f s", name, time.perf_counter() - t)
        return value

    def flush(self) -> None:
        """Write ``reproduce.json`` and the markdown block for the parts done so far."""
        write_outputs(dict(self.summary), self.out, self.results_md, self.t0, finished=False)


def _run_model_parts(parts: _Parts, split: dict, s: ReproduceSettings, base_arrays, out: Path, device) -> None:
    """The parts that need the baseline: k-correction (Fig. S3), larger training set, large cells, CNN (Fig. S1)."""
    from . import figures, runs

    summary = parts.summary
    got = parts.run("kcorrection", lambda: runs.run_kcorrection(split, s, base_arrays))
    if got:
        summary["kcorrection"], k_arrays = got
        fig = figures.figure_s3(summary["kcorrection"], k_arrays, out / "fig_s3_kcorrection.png")
        summary["figures"].append(str(fig))
        parts.flush()
    if runs.pool_split(split) is not None:
        got = parts.run("pool", lambda: runs.run_pool_variant(split, s, base_arrays, device=device))
        if got:
            summary["pool"] = got
            parts.flush()
    else:
        summary["notes"].append("larger-training-set variant skipped: fewer than two independent snapshots "
                                "per pressure")
    if split["large_test"]:
        got = parts.run("large", lambda: runs.run_large_cells(split, s, base_arrays, device=device))
        if got:
            summary["large"], l_arrays = got
            kres = {"n_shells": s.k_shells, "cases": summary["large"]["kcorrection"]}
            summary["figures"].append(str(figures.figure_s3(kres, l_arrays, out / "fig_s3_large.png")))
            parts.flush()
    else:
        summary["notes"].append(f"large-cell rows skipped: no fluid test cell of ≥ {runs.LARGE_CELL_ATOMS} atoms")
    got = parts.run("cnn", lambda: runs.run_cnn(split, s, base_arrays, device=device))
    if got:
        summary["cnn"], c_arrays = got
        summary["figures"].append(str(figures.figure_s1(summary["cnn"], c_arrays, out / "fig_s1_cnn.png")))
        parts.flush()


def _run_sweeps(parts: _Parts, split: dict, s: ReproduceSettings, out: Path, device) -> None:
    """The convergence sweeps (Fig. S2)."""
    from . import figures, runs

    sw = parts.run("sweeps", lambda: runs.run_sweeps(split, s, device=device))
    if sw:
        parts.summary["sweeps"] = sw
        parts.summary["figures"].append(str(figures.figure_s2(sw, out / "fig_s2_convergence.png")))


def write_outputs(summary: dict, out: Path, results_md: str | os.PathLike | None, t0: float, *, finished: bool) -> dict:
    """Write ``reproduce.json`` and the markdown block for the parts done so far.

    Called after every part, so a run that is stopped early (time limit) leaves its
    finished parts on disk; ``summary["finished"]`` says whether all parts ran.
    """
    from . import report

    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["finished"] = finished
    summary = to_jsonable(summary)
    (out / "reproduce.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    target = Path(results_md) if results_md is not None else out / "reproduce.md"
    rel = os.path.relpath(out.resolve(), target.resolve().parent)
    block = report.render(summary, figures_rel=Path(rel).as_posix())
    report.write_block(target, block)
    summary["results_md"] = str(target)
    return summary
