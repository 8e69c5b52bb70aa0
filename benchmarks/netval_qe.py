"""φ of Quantum ESPRESSO ELF cube files versus grid spacing (prints one JSON object).

Writes a tiny molecular-hydrogen cell (4 H₂ in a 2.9 × 2.9 × 3.7 Å tetragonal box,
molecular orientations from ``--seed``), runs ``pw.x`` (LDA, H.pz-vbc.UPF,
ecutwfc 40 Ry, 3×3×3 k-points, Methfessel–Paxton smearing) once per FFT grid and
``pp.x plot_num=8`` (ELF, Gaussian cube), then reads each cube with
``elfcore.io.read_field`` and reports the grid and refined merge-tree φ, the bcp
φ and the critical-point counts.

    .venv/bin/python benchmarks/netval_qe.py [--grids 28 36 48 64] [--workdir DIR]

Needs ``pw.x`` and ``pp.x`` on PATH and the UPF file in ``--pseudo-dir``
(Debian's quantum-espresso package installs it in /usr/share/espresso/pseudo).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

A, C = 2.9, 3.7
# grid along a (= b) → (grid along c, ecutrho in Ry)
GRIDS = {28: (36, 160), 36: (45, 200), 48: (60, 300), 64: (80, 480), 80: (100, 720)}


def structure(seed: int) -> np.ndarray:
    """Cartesian positions (8, 3) in Å of 4 H₂ molecules (bond 0.74 Å)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.25, 0.25, 0.2], [0.75, 0.75, 0.2], [0.25, 0.75, 0.7], [0.75, 0.25, 0.7]]) * [A, A, C]
    pos = []
    for cen in centres:
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        pos += [cen - 0.37 * u, cen + 0.37 * u]
    return np.array(pos)


def write_inputs(workdir: str, n: int, seed: int, pseudo_dir: str) -> tuple[str, str]:
    nc, ecutrho = GRIDS[n]
    pos = "\n".join("H %.6f %.6f %.6f" % tuple(p) for p in structure(seed))
    scf = f"""&CONTROL
  calculation='scf', prefix='h8_{n}', outdir='./out_{n}', pseudo_dir='{pseudo_dir}'
/
&SYSTEM
  ibrav=0, nat=8, ntyp=1, ecutwfc=40, ecutrho={ecutrho}, nr1={n}, nr2={n}, nr3={nc},
  occupations='smearing', smearing='mv', degauss=0.02
/
&ELECTRONS
  conv_thr=1e-8
/
ATOMIC_SPECIES
H 1.008 H.pz-vbc.UPF
CELL_PARAMETERS angstrom
{A} 0 0
0 {A} 0
0 0 {C}
ATOMIC_POSITIONS angstrom
{pos}
K_POINTS automatic
3 3 3 0 0 0
"""
    pp = f"""&INPUTPP
  prefix='h8_{n}', outdir='./out_{n}', filplot='elf_{n}.dat', plot_num=8
/
&PLOT
  iflag=3, output_format=6, fileout='elf_{n}.cube'
/
"""
    for name, text in ((f"scf_{n}.in", scf), (f"pp_{n}.in", pp)):
        with open(os.path.join(workdir, name), "w") as fh:
            fh.write(text)
    return f"scf_{n}.in", f"pp_{n}.in"


def run_qe(workdir: str, n: int, seed: int, pseudo_dir: str) -> str:
    scf, pp = write_inputs(workdir, n, seed, pseudo_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for exe, inp in (("pw.x", scf), ("pp.x", pp)):
        with open(os.path.join(workdir, inp)) as fin, open(os.path.join(workdir, inp + ".out"), "w") as fout:
            subprocess.run([exe], stdin=fin, stdout=fout, stderr=subprocess.STDOUT, cwd=workdir, env=env, check=True)
    return os.path.join(workdir, f"elf_{n}.cube")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grids", type=int, nargs="+", default=[28, 36, 48, 64], choices=sorted(GRIDS))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workdir", default=None, help="keep the QE files here (default: a temporary folder)")
    p.add_argument("--pseudo-dir", default="/usr/share/espresso/pseudo")
    args = p.parse_args()

    from elfcore.io import read_field
    from elfcore.topology import topology_summary

    for exe in ("pw.x", "pp.x"):
        if shutil.which(exe) is None:
            raise SystemExit(f"{exe} not found on PATH")
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory()
        workdir = tmp.name
    os.makedirs(workdir, exist_ok=True)
    rows = []
    for n in args.grids:
        t0 = time.perf_counter()
        cube = run_qe(workdir, n, args.seed, args.pseudo_dir)
        t_qe = time.perf_counter() - t0
        field = read_field(cube)
        s = topology_summary(field, bcp=True)
        spacing = [float(x) for x in np.linalg.norm(np.asarray(field.attrs["cell"]), axis=1) / np.asarray(field.shape)]
        rows.append(
            {
                "grid": s["grid"],
                "spacing_A": [round(x, 4) for x in spacing],
                "phi": s["networking_value"],
                "phi_grid": s["networking_value_grid"],
                "phi_bcp": s["phi_bcp"],
                "phi_2dec": s["phi_2dec"],
                "percolation": s["percolation"],
                "molecularity": s["molecularity"],
                "phi_star": s["phi_star"],
                "critical_points": s["critical_points"],
                "morse_sum": s["morse_sum"],
                "seconds_qe": round(t_qe, 2),
                "seconds_topology": s["seconds"],
            }
        )
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps({"structure": "4 H2, tetragonal 2.9x2.9x3.7 A", "seed": args.seed, "rows": rows}))


if __name__ == "__main__":
    main()
