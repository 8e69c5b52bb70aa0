"""CP2K input writer, runner and output parsers for the reference data.

Only what the reference data need is covered: Born–Oppenheimer MD (NVT, CSVR
thermostat) and single points that print the stress tensor, the ELF cube and
the electron-density cube. Inputs are plain text built from frozen settings, so
the same settings always give byte-identical inputs (tested as golden files).

Units: CP2K inputs take Å, fs, K and Ry; its cubes are in bohr and e/bohr³
(converted to Å and Å⁻³ on read); energies are parsed in hartree.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DFTError, FormatError, SettingsError, StructureError
from ..io.validate import check_atoms
from ..settings import Settings

__all__ = [
    "CP2KSettings",
    "MDSettings",
    "GTHKind",
    "ELEMENT_KINDS",
    "element_kind",
    "BOHR",
    "HARTREE_EV",
    "GPA_PER_BAR",
    "md_input",
    "single_point_input",
    "find_cp2k",
    "cp2k_version",
    "run_cp2k",
    "parse_output",
    "read_ener",
    "read_xyz_frames",
    "read_cube",
    "read_input_structure",
    "ideal_gas_pressure_gpa",
]

log = logging.getLogger(__name__)

BOHR = 0.529177210903  # Å
HARTREE_EV = 27.211386245988
GPA_PER_BAR = 1e-4
KB_EV = 8.617333262e-5  # eV/K
EV_PER_A3_GPA = 160.21766208  # 1 eV/Å³ in GPa


@dataclass(frozen=True)
class CP2KSettings(Settings):
    """Electronic-structure settings of one kind of CP2K run.

    Parameters
    ----------
    basis : str
        Basis set name in ``BASIS_MOLOPT`` (e.g. ``"DZVP-MOLOPT-SR-GTH"``).
    potential : str
        GTH pseudopotential name in ``GTH_POTENTIALS``.
    xc : str
        Exchange–correlation functional (``XC_FUNCTIONAL`` section name).
    cutoff_ry : float
        Plane-wave cutoff of the finest multigrid, Ry.
    rel_cutoff_ry : float
        Relative cutoff, Ry.
    ngrids : int
        Number of multigrids.
    eps_scf : float
        SCF convergence threshold (hartree).
    max_scf : int
        Maximum SCF iterations; a run that does not converge raises :class:`DFTError`.
    smearing_k : float
        Fermi–Dirac electronic temperature, K (0 disables smearing and uses OT).
    added_mos : int
        Extra (empty) orbitals for smearing.
    eps_default : float
        ``EPS_DEFAULT`` of the QS section.
    kpoints : tuple of 3 int, optional
        Monkhorst–Pack grid (``&KPOINTS SCHEME MONKHORST-PACK``); None = Γ point only.
    """

    basis: str = "DZVP-MOLOPT-SR-GTH"
    potential: str = "GTH-PBE-q1"
    xc: str = "PBE"
    cutoff_ry: float = 400.0
    rel_cutoff_ry: float = 50.0
    ngrids: int = 4
    eps_scf: float = 1e-7
    max_scf: int = 100
    smearing_k: float = 1500.0
    added_mos: int = 32
    eps_default: float = 1e-12
    kpoints: tuple | None = None

    def __post_init__(self) -> None:
        if self.kpoints is not None:
            k = tuple(int(x) for x in self.kpoints)
            if len(k) != 3 or min(k) < 1:
                raise SettingsError(f"kpoints must be 3 positive integers, got {self.kpoints}")
            object.__setattr__(self, "kpoints", k)
        if self.cutoff_ry <= 0 or self.rel_cutoff_ry <= 0:
            raise SettingsError(f"cutoffs must be > 0, got {self.cutoff_ry}, {self.rel_cutoff_ry}")
        if self.ngrids < 1:
            raise SettingsError(f"ngrids must be >= 1, got {self.ngrids}")
        if not 0 < self.eps_scf < 1:
            raise SettingsError(f"eps_scf must be in (0, 1), got {self.eps_scf}")
        if self.max_scf < 1:
            raise SettingsError(f"max_scf must be >= 1, got {self.max_scf}")
        if self.smearing_k < 0 or self.added_mos < 0:
            raise SettingsError("smearing_k and added_mos must be >= 0")
        for name in ("basis", "potential", "xc"):
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", getattr(self, name)):
                raise SettingsError(f"{name} {getattr(self, name)!r} is not a plain CP2K name")


@dataclass(frozen=True)
class MDSettings(Settings):
    """Born–Oppenheimer NVT MD settings.

    Parameters
    ----------
    steps : int
        Number of MD steps.
    timestep_fs : float
        Time step, fs.
    temperature_k : float
        Thermostat (and initial-velocity) temperature, K.
    thermostat_timecon_fs : float
        CSVR time constant, fs.
    seed : int
        CP2K ``GLOBAL/SEED`` (initial velocities and thermostat noise).
    traj_every : int
        Write positions/velocities every this many steps.
    """

    steps: int = 450
    timestep_fs: float = 1.0
    temperature_k: float = 1500.0
    thermostat_timecon_fs: float = 20.0
    seed: int = 1
    traj_every: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.traj_every < 1:
            raise SettingsError("steps and traj_every must be >= 1")
        if not 0 < self.timestep_fs <= 5:
            raise SettingsError(f"timestep_fs must be in (0, 5], got {self.timestep_fs}")
        if self.temperature_k <= 0 or self.thermostat_timecon_fs <= 0:
            raise SettingsError("temperature_k and thermostat_timecon_fs must be > 0")


# --------------------------------------------------------------------------- input writers
@dataclass(frozen=True)
class GTHKind:
    """Basis set and pseudopotential of one element (a CP2K ``&KIND``).

    Parameters
    ----------
    basis : str
        Basis set name.
    potential : str
        GTH pseudopotential name in ``GTH_POTENTIALS`` (``q<N>``: N valence electrons).
    basis_file : str
        The cp2k-data file that holds ``basis`` for this element.
    """

    basis: str
    potential: str
    basis_file: str


#: Kinds of the elements other than hydrogen (hydrogen's are ``CP2KSettings.basis`` and ``potential``),
#: checked against Debian's cp2k-data (``/usr/share/cp2k``): the one GTH-PBE potential of each element
#: (Mg: the semicore q10 rather than q2, to match its MOLOPT-SR basis) and its DZVP-MOLOPT-SR-GTH basis.
#: La has no MOLOPT basis in ``BASIS_MOLOPT``; its DZVP-MOLOPT-SR-GTH (q11) is in ``BASIS_MOLOPT_UCL``
#: (Ling and Slater, UCL). An element missing here has no checked basis/potential pair and is refused.
ELEMENT_KINDS = {
    "Mg": GTHKind("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q10", "BASIS_MOLOPT"),
    "S": GTHKind("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q6", "BASIS_MOLOPT"),
    "Ca": GTHKind("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q10", "BASIS_MOLOPT"),
    "Sc": GTHKind("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q11", "BASIS_MOLOPT"),
    "Y": GTHKind("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q11", "BASIS_MOLOPT"),
    "La": GTHKind("DZVP-MOLOPT-SR-GTH", "GTH-PBE-q11", "BASIS_MOLOPT_UCL"),
}


def element_kind(symbol: str, settings: CP2KSettings) -> GTHKind:
    """The basis set and pseudopotential of ``symbol`` (H: from ``settings``; others: :data:`ELEMENT_KINDS`).

    Raises
    ------
    StructureError
        If ``symbol`` has no entry in :data:`ELEMENT_KINDS`.
    """
    if symbol == "H":
        return GTHKind(settings.basis, settings.potential,
                       "BASIS_MOLOPT_UZH" if _uzh_basis(settings.basis) else "BASIS_MOLOPT")
    if symbol not in ELEMENT_KINDS:
        raise StructureError(f"no CP2K basis set and GTH-PBE potential checked in cp2k-data for element {symbol}; "
                             f"known: {['H', *ELEMENT_KINDS]}")
    return ELEMENT_KINDS[symbol]


def _check_atoms(atoms) -> None:
    """A structure with atoms, finite positions, a periodic cell and elements of known kinds
    (H and :data:`ELEMENT_KINDS`; :func:`elfcore.io.validate.check_atoms`)."""
    check_atoms(atoms, species=("H", *ELEMENT_KINDS), require_atoms=True, require_cell=True, where="structure",
                species_of="CP2K reference's (cp2k-data basis and potential)")


def _elements(atoms) -> tuple:
    """The elements of ``atoms``: H first, then the others in order of first appearance."""
    symbols = list(dict.fromkeys(atoms.get_chemical_symbols()))
    return ("H", *(s for s in symbols if s != "H"))


def _subsys(atoms, settings: CP2KSettings, velocities: np.ndarray | None = None) -> str:
    cell = np.asarray(atoms.cell[:], dtype=float)
    lines = ["  &SUBSYS", "    &CELL"]
    for name, vec in zip("ABC", cell):
        lines.append(f"      {name} {vec[0]:.10f} {vec[1]:.10f} {vec[2]:.10f}")
    lines += ["      PERIODIC XYZ", "    &END CELL", "    &COORD"]
    for sym, p in zip(atoms.get_chemical_symbols(), atoms.get_positions()):
        lines.append(f"      {sym} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}")
    lines.append("    &END COORD")
    if velocities is not None:
        lines.append("    &VELOCITY")
        for v in np.asarray(velocities, dtype=float).reshape(-1, 3):
            lines.append(f"      {v[0]:.12e} {v[1]:.12e} {v[2]:.12e}")
        lines.append("    &END VELOCITY")
    for symbol in _elements(atoms):
        kind = element_kind(symbol, settings)
        lines += [f"    &KIND {symbol}", f"      BASIS_SET {kind.basis}", f"      POTENTIAL {kind.potential}",
                  "    &END KIND"]
    lines.append("  &END SUBSYS")
    return "\n".join(lines)


def _uzh_basis(name: str) -> bool:
    """True for the MOLOPT bases of ``BASIS_MOLOPT_UZH`` (e.g. ``TZVP-MOLOPT-PBE-GTH-q1``)."""
    return bool(re.search(r"MOLOPT-(PBE|GGA|PBE0|HYB|SCAN|MGGA)-", name))


def _dft(settings: CP2KSettings, *, extrapolate: bool, cubes: bool, stride: int = 1,
         elements: tuple = ("H",)) -> str:
    # BASIS_MOLOPT always, then the files of the elements' kinds in order of first need
    files = list(dict.fromkeys(["BASIS_MOLOPT", *(element_kind(e, settings).basis_file for e in elements)]))
    lines = [
        "  &DFT",
        *(f"    BASIS_SET_FILE_NAME {f}" for f in files),
        "    POTENTIAL_FILE_NAME GTH_POTENTIALS",
        "    &MGRID",
        f"      CUTOFF {settings.cutoff_ry:g}",
        f"      REL_CUTOFF {settings.rel_cutoff_ry:g}",
        f"      NGRIDS {settings.ngrids}",
        "    &END MGRID",
        "    &QS",
        f"      EPS_DEFAULT {settings.eps_default:.1e}",
    ]
    if extrapolate:
        lines += ["      EXTRAPOLATION ASPC", "      EXTRAPOLATION_ORDER 3"]
    lines += ["    &END QS", "    &SCF", f"      EPS_SCF {settings.eps_scf:.1e}", f"      MAX_SCF {settings.max_scf}"]
    if settings.smearing_k > 0:
        lines += [
            f"      ADDED_MOS {settings.added_mos}",
            "      &SMEAR ON",
            "        METHOD FERMI_DIRAC",
            f"        ELECTRONIC_TEMPERATURE [K] {settings.smearing_k:g}",
            "      &END SMEAR",
            "      &DIAGONALIZATION ON",
            "        ALGORITHM STANDARD",
            "      &END DIAGONALIZATION",
            "      &MIXING",
            "        METHOD BROYDEN_MIXING",
            "        ALPHA 0.3",
            "        NBROYDEN 8",
            "      &END MIXING",
        ]
    else:
        lines += [
            "      &OT ON",
            "        MINIMIZER DIIS",
            "        PRECONDITIONER FULL_SINGLE_INVERSE",
            "      &END OT",
        ]
    lines += [
        "      &PRINT",
        "        &RESTART OFF",
        "        &END RESTART",
        "      &END PRINT",
        "    &END SCF",
    ]
    if settings.kpoints is not None:
        k = settings.kpoints
        lines += ["    &KPOINTS", f"      SCHEME MONKHORST-PACK {k[0]} {k[1]} {k[2]}", "    &END KPOINTS"]
    lines += [
        "    &XC",
        f"      &XC_FUNCTIONAL {settings.xc}",
        "      &END XC_FUNCTIONAL",
        "    &END XC",
    ]
    if cubes:
        lines += [
            "    &PRINT",
            "      &ELF_CUBE",
            f"        STRIDE {stride}",
            "      &END ELF_CUBE",
            "      &E_DENSITY_CUBE",
            f"        STRIDE {stride}",
            "      &END E_DENSITY_CUBE",
            "    &END PRINT",
        ]
    lines.append("  &END DFT")
    return "\n".join(lines)


def md_input(
    atoms,
    settings: CP2KSettings,
    md: MDSettings,
    *,
    project: str = "md",
    velocities: np.ndarray | None = None,
    stress: bool = True,
) -> str:
    """CP2K input text for NVT Born–Oppenheimer MD with a CSVR thermostat.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure (Å): hydrogen, or a hydride of the elements of :data:`ELEMENT_KINDS`.
    settings : CP2KSettings
        Electronic settings (usually cheaper than the ELF ones).
    md : MDSettings
        Steps, time step, temperature, thermostat, seed.
    project : str
        CP2K project name (prefix of every output file).
    velocities : ndarray, shape (n_atoms, 3), optional
        Initial velocities in bohr/au_time (CP2K's unit); default: Maxwell–Boltzmann at
        ``md.temperature_k`` drawn from ``md.seed``.
    stress : bool
        Compute the analytical stress tensor every step and write it to ``{project}-1.stress``
        (CP2K's static stress, without the kinetic term of the nuclei).

    Returns
    -------
    str
        The input file text.
    """
    _check_atoms(atoms)
    stress_force_eval = "  STRESS_TENSOR ANALYTICAL\n" if stress else ""
    text = f"""&GLOBAL
  PROJECT {project}
  RUN_TYPE MD
  PRINT_LEVEL LOW
  SEED {md.seed}
&END GLOBAL
{_md_motion(md, stress)}&FORCE_EVAL
  METHOD QS
{stress_force_eval}{_dft(settings, extrapolate=True, cubes=False, elements=_elements(atoms))}
{_subsys(atoms, settings, velocities)}
&END FORCE_EVAL
"""
    return text


def _md_motion(md: MDSettings, stress: bool) -> str:
    """The ``&MOTION`` section of :func:`md_input`: NVT with CSVR, trajectory/velocity/stress/restart output."""
    every = md.traj_every
    stress_print = (
        f"    &STRESS\n      &EACH\n        MD {every}\n      &END EACH\n    &END STRESS\n" if stress else ""
    )
    return f"""&MOTION
  &MD
    ENSEMBLE NVT
    STEPS {md.steps}
    TIMESTEP {md.timestep_fs:g}
    TEMPERATURE {md.temperature_k:g}
    &THERMOSTAT
      TYPE CSVR
      REGION GLOBAL
      &CSVR
        TIMECON {md.thermostat_timecon_fs:g}
      &END CSVR
    &END THERMOSTAT
  &END MD
  &PRINT
    &TRAJECTORY
      FORMAT XYZ
      &EACH
        MD {every}
      &END EACH
    &END TRAJECTORY
    &VELOCITIES
      FORMAT XYZ
      &EACH
        MD {every}
      &END EACH
    &END VELOCITIES
{stress_print}    &RESTART
      BACKUP_COPIES 0
      &EACH
        MD 10
      &END EACH
    &END RESTART
    &RESTART_HISTORY OFF
    &END RESTART_HISTORY
  &END PRINT
&END MOTION
"""


def single_point_input(
    atoms,
    settings: CP2KSettings,
    *,
    project: str = "sp",
    stress: bool = True,
    cubes: bool = True,
    stride: int = 1,
) -> str:
    """CP2K input text for one energy/force evaluation, with stress and ELF/density cubes.

    Parameters
    ----------
    atoms : ase.Atoms
        Periodic structure (Å): hydrogen, or a hydride of the elements of :data:`ELEMENT_KINDS`.
    settings : CP2KSettings
        Electronic settings.
    project : str
        CP2K project name; cubes are written as ``{project}-ELF_S1-1_0.cube`` and
        ``{project}-ELECTRON_DENSITY-1_0.cube``.
    stress : bool
        Compute the analytical stress tensor (printed in GPa).
    cubes : bool
        Write the ELF and electron-density cubes.
    stride : int
        Cube stride (1 = the full finest grid).

    Returns
    -------
    str
        The input file text.
    """
    _check_atoms(atoms)
    if stride < 1:
        raise SettingsError(f"stride must be >= 1, got {stride}")
    stress_lines = ""
    print_lines = "  &PRINT\n    &FORCES ON\n    &END FORCES\n"
    if stress:
        stress_lines = "  STRESS_TENSOR ANALYTICAL\n"
        print_lines += "    &STRESS_TENSOR ON\n      COMPONENTS\n    &END STRESS_TENSOR\n"
    print_lines += "  &END PRINT\n"
    run_type = "ENERGY_FORCE"
    dft = _dft(settings, extrapolate=False, cubes=cubes, stride=stride, elements=_elements(atoms))
    text = f"""&GLOBAL
  PROJECT {project}
  RUN_TYPE {run_type}
  PRINT_LEVEL LOW
&END GLOBAL
&FORCE_EVAL
  METHOD QS
{stress_lines}{print_lines}{dft}
{_subsys(atoms, settings)}
&END FORCE_EVAL
"""
    return text


# --------------------------------------------------------------------------- running
def find_cp2k(executable: str | None = None) -> str:
    """Path of the CP2K binary.

    Looks at ``executable``, then ``$ELFCORE_CP2K``, then ``cp2k.psmp``, ``cp2k.ssmp``,
    ``cp2k`` on ``PATH``.

    Raises
    ------
    DFTError
        If none is found.
    """
    candidates = [executable] if executable else [os.environ.get("ELFCORE_CP2K"), "cp2k.psmp", "cp2k.ssmp", "cp2k"]
    for cand in candidates:
        if not cand:
            continue
        path = shutil.which(cand)
        if path:
            return path
    raise DFTError(
        f"CP2K binary not found (tried {', '.join(c for c in candidates if c)}); "
        "install it (Debian: apt install cp2k) or set ELFCORE_CP2K"
    )


def cp2k_version(executable: str | None = None) -> str:
    """Version string of the CP2K binary, e.g. ``"CP2K version 2023.1"``."""
    exe = find_cp2k(executable)
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DFTError(f"cannot run {exe} --version: {exc}") from exc
    for line in out.splitlines():
        if "CP2K version" in line:
            return line.strip()
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def run_cp2k(
    input_text: str,
    workdir: str | os.PathLike,
    *,
    case: str,
    project: str | None = None,
    executable: str | None = None,
    threads: int = 2,
    ranks: int = 1,
    timeout_s: float | None = None,
    check_scf: bool = True,
    input_name: str | None = None,
    output_name: str | None = None,
) -> Path:
    """Write ``input_text`` to ``workdir`` and run CP2K there.

    Parameters
    ----------
    input_text : str
        The CP2K input.
    workdir : path
        Run directory (created); the input is ``{project}.inp``, the output ``{project}.out``.
    case : str
        Case name used in error messages.
    project : str, optional
        Project name (default: parsed from the input's ``PROJECT`` line).
    executable : str, optional
        CP2K binary (see :func:`find_cp2k`).
    threads : int
        OpenMP threads per rank.
    ranks : int
        MPI ranks (``mpirun -np``); 1 runs the binary directly.
    timeout_s : float, optional
        Kill CP2K after this many seconds.
    check_scf : bool
        Raise if any SCF in the output did not converge.
    input_name, output_name : str, optional
        File names (default ``{project}.inp`` and ``{project}.out``).

    Returns
    -------
    pathlib.Path
        The CP2K output file.

    Raises
    ------
    DFTError
        Missing binary, non-zero exit, crash, timeout or unconverged SCF; the message names
        the case and the output file.
    """
    exe = find_cp2k(executable)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if project is None:
        m = re.search(r"^\s*PROJECT\s+(\S+)", input_text, re.M)
        project = m.group(1) if m else "cp2k"
    inp = workdir / (input_name or f"{project}.inp")
    out = workdir / (output_name or f"{project}.out")
    inp.write_text(input_text)
    if out.exists():
        out.unlink()  # CP2K appends to an existing output file
    cmd, env = _cp2k_command(exe, inp, out, case=case, threads=threads, ranks=ranks)
    log.info("case %s: running %s in %s", case, " ".join(cmd), workdir)
    t0 = time.time()
    proc, stdout, stderr = _run_process(cmd, workdir, env, inp, out, case=case, exe=exe, timeout_s=timeout_s)
    (workdir / f"{inp.stem}.stderr").write_text((stdout or "") + (stderr or ""))
    if proc.returncode != 0:
        tail = (stderr or stdout or "").strip().splitlines()[-3:]
        raise DFTError(
            f"case {case}: CP2K exited with code {proc.returncode} after {time.time() - t0:.0f} s; "
            f"see {out} ({' | '.join(tail)})"
        )
    if not out.exists():
        raise DFTError(f"case {case}: CP2K wrote no output file {out}")
    check_output(out, case=case, check_scf=check_scf)
    return out


def _cp2k_command(exe: str, inp: Path, out: Path, *, case: str, threads: int, ranks: int):
    """Command line (``mpirun -np`` for ``ranks > 1``) and environment of a CP2K run."""
    cmd = [exe, "-i", inp.name, "-o", out.name]
    if ranks > 1:
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            raise DFTError(f"case {case}: mpirun not found for {ranks} MPI ranks")
        cmd = [mpirun, "-np", str(ranks), "--oversubscribe", *cmd]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if ranks > 1 and hasattr(os, "geteuid") and os.geteuid() == 0:
        # Open MPI refuses to start as root unless told that this is intended
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no busy-waiting threads on a shared machine
    return cmd, env


def _run_process(cmd: list, workdir: Path, env: dict, inp: Path, out: Path, *, case: str, exe: str,
                 timeout_s: float | None):
    """Run CP2K with a pid file ``{input stem}.pid`` while it runs; return (process, stdout, stderr).

    A timeout or an interruption kills CP2K (no run is left behind).
    """
    pid_file = workdir / f"{inp.stem}.pid"
    try:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise DFTError(f"case {case}: cannot start CP2K ({exe}): {exc}") from exc
    pid_file.write_text(f"{socket.gethostname()} {proc.pid}\n")
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise DFTError(f"case {case}: CP2K timed out after {timeout_s} s; see {out}") from exc
    finally:
        if proc.poll() is None:  # interrupted (e.g. KeyboardInterrupt): do not leave CP2K running
            proc.kill()
            proc.wait()
        pid_file.unlink(missing_ok=True)
    return proc, stdout, stderr


def check_output(path: str | os.PathLike, *, case: str, check_scf: bool = True) -> None:
    """Raise :class:`DFTError` if a CP2K output shows an abort, no normal end or an unconverged SCF."""
    path = Path(path)
    text = path.read_text(errors="replace")
    if "ABORT" in text or "[ABORT]" in text:
        m = re.search(r"\*\s+\[ABORT\].*?\n(.*?)\n", text, re.S)
        raise DFTError(f"case {case}: CP2K aborted; see {path}" + (f": {m.group(1).strip(' *')}" if m else ""))
    if "PROGRAM ENDED AT" not in text:
        raise DFTError(f"case {case}: CP2K output is incomplete (crash?); see {path}")
    if check_scf and re.search(r"SCF run NOT converged|Leaving inner SCF loop after reaching", text):
        raise DFTError(f"case {case}: SCF did not converge; see {path}")


# --------------------------------------------------------------------------- parsers
_FLOAT = r"[-+]?\d+\.?\d*(?:[eEdD][-+]?\d+)?"


def parse_output(path: str | os.PathLike) -> dict:
    """Parse energy, forces, stress and timing from a CP2K single-point output.

    Parameters
    ----------
    path : path
        CP2K ``.out`` file.

    Returns
    -------
    dict
        ``energy_ha`` (float, last total energy), ``stress_gpa`` ((3, 3) array or None;
        CP2K's analytical stress tensor, electronic part only, sign convention of CP2K:
        positive = compressed), ``pressure_gpa`` (one third of its trace, or None),
        ``forces_ev_a`` ((n, 3) array or None), ``scf_steps`` (list of int),
        ``cp2k_version`` (str), ``wall_s`` (float, total CP2K time), ``converged`` (bool).

    Raises
    ------
    FormatError
        If no total energy is found.
    """
    path = Path(path)
    text = path.read_text(errors="replace")
    energies = re.findall(r"ENERGY\|\s+Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(" + _FLOAT + ")", text)
    if not energies:
        raise FormatError("no 'Total FORCE_EVAL ( QS ) energy' line (run crashed?)", str(path))
    result: dict = {"energy_ha": float(energies[-1])}
    stress = None
    blocks = re.findall(
        r"STRESS\|\s+Analytical stress tensor \[GPa\]\s*\n\s*STRESS\|\s+x\s+y\s+z\s*\n"
        r"((?:\s*STRESS\|\s+[xyz]\s+" + f"{_FLOAT}\\s+{_FLOAT}\\s+{_FLOAT}" + r"\s*\n){3})",
        text,
    )
    if blocks:
        rows = [line.split()[2:5] for line in blocks[-1].strip().splitlines()]
        stress = np.array(rows, dtype=float)
    result["stress_gpa"] = stress
    result["pressure_gpa"] = None if stress is None else float(np.trace(stress) / 3.0)
    result["forces_ev_a"] = _parse_forces(text)
    result["scf_steps"] = [int(s) for s in re.findall(r"SCF run converged in\s+(\d+)\s+steps", text)]
    result["converged"] = "SCF run NOT converged" not in text and bool(result["scf_steps"])
    m = re.search(r"CP2K\|\s+version string:\s+(.*)", text)
    result["cp2k_version"] = m.group(1).strip() if m else "unknown"
    m = re.search(r"^\s*CP2K\s+1\s+\S+\s+\S+\s+\S+\s+\S+\s+(" + _FLOAT + ")", text, re.M)
    result["wall_s"] = float(m.group(1)) if m else None
    return result


def _parse_forces(text: str) -> np.ndarray | None:
    m = list(re.finditer(r"ATOMIC FORCES in \[a\.u\.\]\s*\n\s*\n\s*# Atom\s+Kind\s+Element\s+X\s+Y\s+Z\s*\n", text))
    if not m:
        return None
    rows = []
    for line in text[m[-1].end():].splitlines():
        parts = line.split()
        if len(parts) != 6 or not parts[0].isdigit():
            break
        rows.append([float(x) for x in parts[3:6]])
    return np.array(rows) * HARTREE_EV / BOHR


def read_ener(path: str | os.PathLike, *, unique_steps: bool = False) -> np.ndarray:
    """Read a CP2K MD ``.ener`` file.

    Parameters
    ----------
    unique_steps : bool
        Keep one row per step, sorted by step: when a step was written twice (a run
        continued from a restart older than its last written step), the later row wins.

    Returns
    -------
    ndarray, shape (n_steps, 7)
        Columns: step, time (fs), kinetic (Ha), temperature (K), potential (Ha),
        conserved quantity (Ha), CPU time per step (s).
    """
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        rows.append([float(x) for x in line.split()[:7]])
    if not rows:
        raise FormatError("no MD steps in energy file", str(path))
    e = np.array(rows)
    if unique_steps:
        _, last = np.unique(e[::-1, 0], return_index=True)
        e = e[len(e) - 1 - last]
    return e


def read_xyz_frames(path: str | os.PathLike) -> list[tuple[int, float, np.ndarray]]:
    """Read a CP2K XYZ trajectory (positions in Å or velocities in bohr/au_time).

    Returns
    -------
    list of (step, time_fs, array (n_atoms, 3))
    """
    lines = Path(path).read_text().splitlines()
    frames = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError as exc:
            raise FormatError(f"expected an atom count, got {lines[i]!r}", str(path), i + 1) from exc
        header = lines[i + 1]
        ms = re.search(r"i\s*=\s*(\d+)", header)
        mt = re.search(r"time\s*=\s*(" + _FLOAT + ")", header)
        block = lines[i + 2 : i + 2 + n]
        if len(block) < n:
            break  # frame being written
        xyz = np.array([[float(x) for x in ln.split()[1:4]] for ln in block])
        frames.append((int(ms.group(1)) if ms else len(frames), float(mt.group(1)) if mt else float("nan"), xyz))
        i += 2 + n
    return frames


def read_cube(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read a Gaussian cube file written by CP2K.

    Returns
    -------
    values : ndarray, shape (Na, Nb, Nc)
        Grid values, C order (c fastest), point (i, j, k) at fractional (i/Na, j/Nb, k/Nc).
    cell : ndarray, shape (3, 3)
        Lattice vectors, Å (voxel vectors times grid counts).
    positions : ndarray, shape (n, 3)
        Cartesian positions relative to the cube origin, Å.
    numbers : ndarray, shape (n,)
        Atomic numbers.

    Raises
    ------
    FormatError
        On a malformed header or a wrong number of values.
    """
    path = Path(path)
    with open(path) as fh:
        fh.readline()
        fh.readline()
        try:
            head = fh.readline().split()
            natoms = int(head[0])
            origin = np.array(head[1:4], dtype=float)
            axes = [fh.readline().split() for _ in range(3)]
            shape = tuple(abs(int(a[0])) for a in axes)
            vox = np.array([a[1:4] for a in axes], dtype=float)
            atoms = [fh.readline().split() for _ in range(abs(natoms))]
            numbers = np.array([int(a[0]) for a in atoms], dtype=np.int64)
            positions = np.array([a[2:5] for a in atoms], dtype=float).reshape(-1, 3)
        except (IndexError, ValueError) as exc:
            raise FormatError(f"malformed cube header: {exc}", str(path)) from exc
        data = np.array(fh.read().split(), dtype=float)
    if data.size != int(np.prod(shape)):
        raise FormatError(f"cube has {data.size} values; header says {shape} = {np.prod(shape)}", str(path))
    cell = vox * np.array(shape)[:, None] * BOHR
    positions = (positions - origin) * BOHR
    return data.reshape(shape), cell, positions, numbers


def read_input_structure(path: str | os.PathLike):
    """The structure (cell, coordinates) of a CP2K input written by this module.

    Returns
    -------
    ase.Atoms
    """
    from ase import Atoms

    text = Path(path).read_text()
    cell = re.findall(r"^\s+([ABC]) (\S+) (\S+) (\S+)$", text, re.M)[:3]
    m = re.search(r"&COORD\n(.*?)\n\s*&END COORD", text, re.S)
    if len(cell) != 3 or m is None:
        raise FormatError("no &CELL A/B/C or &COORD block", str(path))
    rows = [ln.split() for ln in m.group(1).splitlines() if ln.strip()]
    return Atoms(
        [r[0] for r in rows],
        positions=[[float(x) for x in r[1:4]] for r in rows],
        cell=[[float(x) for x in c[1:]] for c in cell],
        pbc=True,
    )


def ideal_gas_pressure_gpa(natoms: int, temperature_k: float, volume_a3: float) -> float:
    """Kinetic (ideal-gas) pressure N k_B T / V of the nuclei, GPa."""
    return natoms * KB_EV * temperature_k / volume_a3 * EV_PER_A3_GPA


def settings_json(**parts) -> str:
    """JSON string of settings objects (dataclasses become dicts)."""
    return json.dumps(
        {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in parts.items()}, sort_keys=True
    )
