"""Quantum ESPRESSO cross-check of a CP2K reference ELF.

``pw.x`` (PBE, Γ point, Fermi–Dirac smearing at the CP2K electronic temperature)
runs on the case's structure with the FFT grid forced to the case's grid, then
``pp.x`` (``plot_num = 8``) writes the ELF as a cube on that same grid, so the two
codes are compared voxel by voxel without interpolation.

Pseudopotential: a norm-conserving PBE hydrogen potential (default: the HSCV
``H_HSCV_PBE-1.0.UPF`` shipped by the Debian package ``quantum-espresso-data``;
set ``ELFCORE_QE_PSEUDO`` to use another file). Norm-conserving matters: with
ultrasoft/PAW potentials ``pp.x`` computes the ELF from the smooth part only.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from ..errors import DFTError

__all__ = ["QE_PSEUDO_CANDIDATES", "max_ecutwfc", "find_pseudo", "pw_input", "pp_input", "run_qe_elf", "cross_check", "case_from_run"]

log = logging.getLogger(__name__)

KB_RY = 6.333623e-6  # Boltzmann constant, Ry/K

# Debian quantum-espresso-data ships this PBE norm-conserving H potential among its examples.
QE_PSEUDO_CANDIDATES = (
    "/usr/share/doc/quantum-espresso/examples/CPV/EXX-wf-example/H_HSCV_PBE-1.0.UPF.gz",
    "/usr/share/doc/quantum-espresso/examples/CPV/EXX-wf-example/H_HSCV_PBE-1.0.UPF",
)


def max_ecutwfc(cell, grid) -> float:
    """Largest ``ecutwfc`` (Ry, with ``ecutrho = 4 ecutwfc``) whose density sphere fits the FFT ``grid``.

    Parameters
    ----------
    cell : array_like, shape (3, 3)
        Lattice vectors, Å.
    grid : tuple of 3 int
    """
    from .cp2k import BOHR

    cell = np.asarray(cell, dtype=float) / BOHR
    vol = abs(np.linalg.det(cell))
    widths = [vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    gmax = min(n * np.pi / w for n, w in zip(grid, widths))  # bohr^-1
    return float(np.floor(0.98 * gmax**2 / 4.0))


def find_pseudo(path: str | None = None) -> Path:
    """The hydrogen pseudopotential file (``path``, ``$ELFCORE_QE_PSEUDO`` or the Debian one).

    Raises
    ------
    DFTError
        If none exists.
    """
    cands = [path] if path else [os.environ.get("ELFCORE_QE_PSEUDO"), *QE_PSEUDO_CANDIDATES]
    for c in cands:
        if c and Path(c).exists():
            return Path(c)
    raise DFTError(f"no hydrogen pseudopotential found (tried {[c for c in cands if c]}); set ELFCORE_QE_PSEUDO")


def pw_input(atoms, grid, *, pseudo_name: str, ecutwfc_ry: float = 80.0, smearing_k: float = 1500.0,
             prefix: str = "h") -> str:
    """``pw.x`` input text (SCF, Γ point, FFT grid = ``grid``).

    Parameters
    ----------
    atoms : ase.Atoms
        Structure, Å.
    grid : tuple of 3 int
        FFT grid (nr1, nr2, nr3) — the CP2K case grid.
    pseudo_name : str
        File name of the pseudopotential inside ``pseudo_dir`` (``./``).
    ecutwfc_ry : float
        Wave-function cutoff, Ry (``ecutrho`` = 4 × this).
    smearing_k : float
        Fermi–Dirac electronic temperature, K.
    """
    cell = np.asarray(atoms.cell[:])
    nbnd = int(np.ceil(len(atoms) / 2 * 1.25)) + 4
    lines = [
        "&CONTROL",
        "  calculation = 'scf'",
        f"  prefix = '{prefix}'",
        "  outdir = './out'",
        "  pseudo_dir = './'",
        "  tprnfor = .true.",
        "  tstress = .true.",
        "/",
        "&SYSTEM",
        "  ibrav = 0",
        f"  nat = {len(atoms)}",
        "  ntyp = 1",
        f"  ecutwfc = {ecutwfc_ry:g}",
        f"  ecutrho = {4 * ecutwfc_ry:g}",
        f"  nr1 = {grid[0]}, nr2 = {grid[1]}, nr3 = {grid[2]}",
        f"  nbnd = {nbnd}",
        "  occupations = 'smearing'",
        "  smearing = 'fd'",
        f"  degauss = {smearing_k * KB_RY:.8f}",
        "/",
        "&ELECTRONS",
        "  conv_thr = 1.0d-9",
        "  mixing_beta = 0.4",
        "/",
        "ATOMIC_SPECIES",
        f"  H 1.00794 {pseudo_name}",
        "CELL_PARAMETERS angstrom",
        *[f"  {v[0]:.10f} {v[1]:.10f} {v[2]:.10f}" for v in cell],
        "ATOMIC_POSITIONS angstrom",
        *[f"  H {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}" for p in atoms.get_positions()],
        "K_POINTS gamma",
        "",
    ]
    return "\n".join(lines)


def pp_input(prefix: str = "h", fileout: str = "elf.cube") -> str:
    """``pp.x`` input: ELF (``plot_num = 8``) as a 3D cube on the FFT grid."""
    return "\n".join([
        "&INPUTPP",
        f"  prefix = '{prefix}'",
        "  outdir = './out'",
        "  filplot = 'elf.dat'",
        "  plot_num = 8",
        "/",
        "&PLOT",
        "  iflag = 3",
        "  output_format = 6",
        f"  fileout = '{fileout}'",
        "/",
        "",
    ])


def _run(cmd: list[str], inp: Path, out: Path, *, case: str, threads: int, timeout_s: float | None) -> None:
    exe = shutil.which(cmd[0])
    if exe is None:
        raise DFTError(f"case {case}: {cmd[0]} not found (Debian: apt install quantum-espresso)")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        with open(inp) as fin, open(out, "w") as fout:
            proc = subprocess.run([exe, *cmd[1:]], stdin=fin, stdout=fout, stderr=subprocess.STDOUT,
                                  cwd=inp.parent, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise DFTError(f"case {case}: {cmd[0]} timed out; see {out}") from exc
    text = out.read_text(errors="replace")
    if proc.returncode != 0 or "JOB DONE" not in text:
        raise DFTError(f"case {case}: {cmd[0]} failed (exit {proc.returncode}); see {out}")
    if cmd[0] == "pw.x" and "convergence has been achieved" not in text:
        raise DFTError(f"case {case}: pw.x SCF did not converge; see {out}")


def run_qe_elf(atoms, grid, work_dir: str | os.PathLike, *, case: str, ecutwfc_ry: float = 80.0,
               smearing_k: float = 1500.0, pseudo: str | None = None, threads: int = 2,
               timeout_s: float | None = None):
    """Run ``pw.x`` + ``pp.x`` and return the QE ELF field and run info.

    Returns
    -------
    elf : xarray.DataArray
        ELF on ``grid``.
    info : dict
        ``pressure_gpa`` (QE static pressure), ``wall_s``, ``ecutwfc_ry``, ``pseudo``, ``version``.
    """
    from ..io import read_field

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    src = find_pseudo(pseudo)
    name = src.name[:-3] if src.name.endswith(".gz") else src.name
    target = work / name
    if src.name.endswith(".gz"):
        target.write_bytes(gzip.decompress(src.read_bytes()))
    else:
        shutil.copyfile(src, target)
    (work / "pw.in").write_text(pw_input(atoms, grid, pseudo_name=name, ecutwfc_ry=ecutwfc_ry,
                                         smearing_k=smearing_k))
    (work / "pp.in").write_text(pp_input())
    t0 = time.time()
    _run(["pw.x"], work / "pw.in", work / "pw.out", case=case, threads=threads, timeout_s=timeout_s)
    _run(["pp.x"], work / "pp.in", work / "pp.out", case=case, threads=threads, timeout_s=timeout_s)
    wall = time.time() - t0
    elf = read_field(work / "elf.cube", format="cube", name="elf")
    if tuple(elf.shape) != tuple(grid):
        raise DFTError(f"case {case}: QE ELF grid {elf.shape} != requested {tuple(grid)}; see {work / 'pw.out'}")
    text = (work / "pw.out").read_text(errors="replace")
    import re

    m = re.findall(r"total\s+stress.*P=\s*([-\d.]+)", text)
    v = re.search(r"Program PWSCF (v\S+)", text)
    info = {"pressure_gpa": float(m[-1]) / 10.0 if m else None, "wall_s": wall, "ecutwfc_ry": ecutwfc_ry,
            "pseudo": name, "version": v.group(1) if v else "unknown"}
    return elf, info


def cross_check(case, work_dir: str | os.PathLike, *, ecutwfc_ry: float = 80.0, threads: int = 2) -> dict:
    """QE ELF of a case on its grid, compared with the case's CP2K ``elf_ref``.

    Parameters
    ----------
    case : path or xarray.Dataset
        A case file (or Dataset) with ``elf_ref``.
    work_dir : path
        QE run folder.
    ecutwfc_ry : float
        Wave-function cutoff, Ry; lowered if the case grid cannot hold ``4 × ecutwfc``.

    Returns
    -------
    dict
        ``case``, ``grid``, MAE/RMSE/max/R² (:func:`elfcore.reference.checks.field_errors`,
        CP2K as reference), QE pressure and timing.
    """
    from ..grid import case_atoms, case_field
    from ..io import read_case
    from .checks import field_errors

    ds = read_case(case) if isinstance(case, (str, os.PathLike)) else case
    name = Path(case).stem if isinstance(case, (str, os.PathLike)) else str(ds.attrs.get("name", "case"))
    atoms = case_atoms(ds)
    ref = case_field(ds, "elf_ref")
    settings = ds.attrs.get("settings", "{}")
    if isinstance(settings, str):
        settings = json.loads(settings)
    smearing_k = float(settings.get("elf_dft", {}).get("smearing_k", 1500.0))
    ecutwfc_ry = min(ecutwfc_ry, max_ecutwfc(atoms.cell[:], ref.shape))
    elf, info = run_qe_elf(atoms, ref.shape, work_dir, case=name, ecutwfc_ry=ecutwfc_ry,
                           smearing_k=smearing_k, threads=threads)
    return {"case": name, "grid": list(ref.shape), **field_errors(ref, elf), "qe": info,
            "cp2k_pressure_static_gpa": ds.attrs.get("pressure_static_gpa")}


def case_from_run(run_dir: str | os.PathLike, atoms=None, *, name: str, settings=None):
    """A case Dataset (``elf_ref``, ``rho_ref``) from a finished CP2K single-point folder.

    ``atoms`` defaults to the structure of the folder's ``sp.inp``.
    """
    from ..grid import make_case
    from ..io import read_field
    from . import cp2k as _cp2k

    run_dir = Path(run_dir)
    if atoms is None:
        atoms = _cp2k.read_input_structure(run_dir / "sp.inp")
    elf = sorted(run_dir.glob("sp-ELF*.cube"))
    rho = sorted(run_dir.glob("sp-ELECTRON_DENSITY*.cube"))
    if not elf or not rho:
        raise DFTError(f"case {name}: no ELF/density cube in {run_dir}")
    res = _cp2k.parse_output(run_dir / "sp.out")
    attrs = {"code": "CP2K", "version": res["cp2k_version"], "name": name,
             "pressure_static_gpa": res["pressure_gpa"]}
    if settings is not None:
        attrs["settings"] = _cp2k.settings_json(elf_dft=settings)
    return make_case(atoms, {"elf_ref": read_field(elf[0], format="cube", name="elf").values,
                             "rho_ref": read_field(rho[0], format="cube", name="rho").values}, attrs=attrs)
