"""The resumable builder end to end on a tiny plan (8 atoms, 4 MD steps, cheap settings)."""
import re
from pathlib import Path

import numpy as np
import pytest

from elfcore.errors import DFTError
from elfcore.reference import builder, cp2k
from elfcore.reference.cp2k import CP2KSettings, MDSettings


def _tiny_plan():
    cheap = CP2KSettings(basis="SZV-MOLOPT-SR-GTH", cutoff_ry=100, rel_cutoff_ry=20, eps_scf=1e-5,
                         smearing_k=0, added_mos=0, eps_default=1e-7, max_scf=50)
    sp = CP2KSettings(basis="SZV-MOLOPT-SR-GTH", cutoff_ry=120, rel_cutoff_ry=30, eps_scf=1e-6,
                      added_mos=4, eps_default=1e-8, max_scf=50)
    return builder.ReferencePlan(
        fluids=(builder.FluidTarget(100.0, 2.8, 5),),
        large_fluids=(),
        repeat=1,
        md=MDSettings(steps=4, timestep_fs=0.5, temperature_k=1000.0, thermostat_timecon_fs=10.0),
        production_timestep_fs=0.25,
        md_dft=cheap,
        elf_dft=sp,
        equilibration_fs=1.0,
        sample_interval_fs=1.0,
        n_snapshots=3,
        cubic_groups=(),
        hexagonal_groups=(),
        molecular_cubic=(),
        molecular_hexagonal=(),
        train_cubic_groups=(),
        train_hexagonal_groups=(),
        train_round_atoms=(),
        hydride_prototypes=(),
    )


@pytest.mark.cp2k
@pytest.mark.slow
def test_tiny_build_and_resume(tmp_path):
    try:
        cp2k.find_cp2k()
    except DFTError:
        pytest.skip("cp2k not installed")
    from elfcore.io import read_case

    plan = _tiny_plan()
    names = [c.name for c in builder.plan_cases(plan)]
    assert names == ["fluid_p100_t0001", "fluid_p100_t0002", "fluid_p100_t0003"]
    res = builder.build(plan, tmp_path / "data", tmp_path / "work", threads=1, progress=False)
    assert res["written"] == names and res["skipped"] == []
    ds = read_case(tmp_path / "data" / "fluid_p100_t0001.nc")
    a = ds.attrs
    assert a["code"] == "CP2K" and a["family"] == "fluid" and a["role"] == "train"
    assert a["natoms"] == 8 and a["md_step"] == 2 and a["time_fs"] == pytest.approx(1.0)
    assert a["pressure_gpa"] == pytest.approx(a["pressure_static_gpa"] + a["pressure_kinetic_gpa"])
    assert a["pressure_kinetic_gpa"] == pytest.approx(
        cp2k.ideal_gas_pressure_gpa(8, a["temperature_k"], a["volume_a3"]))
    assert a["temperature_k"] > 0 and a["cpu_time_s"] > 0
    assert "elf_dft" in a["settings"]
    elf = ds["elf_ref"].values
    assert 0 <= elf.min() and elf.max() <= 1 + 1e-5
    # the snapshot positions are those of the MD trajectory at that step
    frames = {s: x for s, _, x in cp2k.read_xyz_frames(tmp_path / "work" / "md" / "fluid_p100" / "md-pos-1.xyz")}
    cell = ds["cell"].values
    d = (ds["positions"].values - frames[2]) @ np.linalg.inv(cell)
    assert np.allclose(d - np.round(d), 0, atol=1e-6)
    assert read_case(tmp_path / "data" / "fluid_p100_t0002.nc").attrs["role"] == "test"
    # after the first segment (4 steps of 0.5 fs) the MD continues with 0.25 fs steps
    a3 = read_case(tmp_path / "data" / "fluid_p100_t0003.nc").attrs
    assert a3["md_step"] == 8 and a3["time_fs"] == pytest.approx(3.0)
    assert a3["md_timestep_fs"] == pytest.approx(0.25) and a["md_timestep_fs"] == pytest.approx(0.5)
    md_dir = tmp_path / "work" / "md" / "fluid_p100"
    cont = (md_dir / "md_restart.inp").read_text()
    assert "TIMESTEP 0.25" in cont and "STEPS 4" in cont and "EXT_RESTART" in cont
    assert (md_dir / "md.out.before_step4").exists()
    steps = cp2k.read_ener(md_dir / "md-1.ener")[:, 0]
    assert list(steps) == list(range(9))
    # resume: nothing is recomputed
    res = builder.build(plan, tmp_path / "data", tmp_path / "work", threads=1, progress=False)
    assert res["written"] == [] and res["skipped"] == names
    # a changed MD protocol in the same work folder is refused, not mixed
    (tmp_path / "data" / "fluid_p100_t0002.nc").unlink()
    other = builder.ReferencePlan(**{**plan.__dict__, "md": MDSettings(steps=5, timestep_fs=0.5,
                                                                       temperature_k=1200.0)})
    with pytest.raises(DFTError, match="different MD input"):
        builder.build(other, tmp_path / "data", tmp_path / "work", threads=1, progress=False)


def test_kpoint_cholesky_failure_retried_with_tighter_eps(tmp_path, monkeypatch):
    pytest.importorskip("pyxtal")
    plan = builder.ReferencePlan(fluids=(), large_fluids=(), cubic_groups=(207,), hexagonal_groups=())
    spec = builder.plan_cases(plan)[0]
    calls = []

    def fake_run(text, workdir, **kw):
        calls.append(text)
        (workdir / "sp.out").parent.mkdir(parents=True, exist_ok=True)
        if len(calls) == 1:
            (workdir / "sp.out").write_text(" *  \\___/     Cholesky decompose failed: matrix is not positive definite\n")
            raise DFTError("first: CP2K aborted")
        raise DFTError("second: stop here")

    monkeypatch.setattr(builder._cp2k, "run_cp2k", fake_run)
    with pytest.raises(DFTError, match="second"):
        builder.compute_case(spec, plan, tmp_path, threads=1)
    assert "EPS_DEFAULT 1.0e-08" in calls[0] and "EPS_DEFAULT 1.0e-12" in calls[1] and len(calls) == 2

    # any other failure is not retried
    calls.clear()

    def other_failure(text, workdir, **kw):
        calls.append(text)
        (workdir / "sp.out").write_text("SCF run NOT converged\n")
        raise DFTError("scf")

    monkeypatch.setattr(builder._cp2k, "run_cp2k", other_failure)
    with pytest.raises(DFTError, match="scf"):
        builder.compute_case(spec, plan, tmp_path, threads=1)
    assert len(calls) == 1


def test_truncate_md_files_keeps_one_entry_per_step(tmp_path):
    # steps 0-3 of a first run (1 fs), which went on to step 4 after its restart at step 2;
    # the continuation from step 2 (0.5 fs) wrote steps 3-5; clean for a restart at step 4
    ener_rows = [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (3, 2.5), (4, 3.0), (5, 3.5)]
    (tmp_path / "md-1.ener").write_text("# Step Nr. Time[fs]\n" + "".join(
        f"{s} {t} 0.1 1500.0 -30.0 -29.9 1.0\n" for s, t in ener_rows))
    xyz = "".join(f"2\n i = {s}, time = {t}, E = -1.0\nH {t} 0 0\nH 0 {s} 0\n" for s, t in ener_rows)
    for name in ("md-pos-1.xyz", "md-vel-1.xyz"):
        (tmp_path / name).write_text(xyz + "2\n i = 6, time = 4.0\nH 0 0 0\n")  # incomplete last frame
    builder._truncate_md_files(tmp_path, 4)
    e = cp2k.read_ener(tmp_path / "md-1.ener")
    assert e[:, 0].tolist() == [0, 1, 2, 3, 4] and e[:, 1].tolist() == [0.0, 1.0, 2.0, 2.5, 3.0]
    frames = cp2k.read_xyz_frames(tmp_path / "md-pos-1.xyz")
    assert [(s, t) for s, t, _ in frames] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 2.5), (4, 3.0)]


def _fake_finished_md(plan, target, work_dir, length=5.0):
    """An MD directory of ``target`` whose last frame (at ``plan.length_fs``) is the fcc start."""
    md_dir = work_dir / "md" / target.name
    md_dir.mkdir(parents=True)
    (md_dir / "md.inp").write_text(builder.md_input_text(plan, target, work_dir))
    atoms = builder.fluid_start(target.volume_per_atom, repeat=plan.repeat, seed=target.seed)
    t = plan.length_fs
    (md_dir / "md-1.ener").write_text(f"# Step Nr. Time[fs]\n{int(2 * t)} {t} 0.1 1500.0 -30.0 -29.9 1.0\n")
    (md_dir / "md-pos-1.xyz").write_text(
        f"{len(atoms)}\n i = {int(2 * t)}, time = {t}, E = -30.0\n"
        + "".join(f"H {x:.8f} {y:.8f} {z:.8f}\n" for x, y, z in atoms.get_positions()))
    return atoms


def test_md_can_start_from_another_targets_last_snapshot(tmp_path):
    import dataclasses

    src = builder.FluidTarget(100.0, 2.8, 5)
    dense = builder.FluidTarget(130.0, 2.5, 6, start_from=src.name, thermostat_timecon_fs=5.0)
    plan = dataclasses.replace(_tiny_plan(), fluids=(src, dense))
    source_atoms = _fake_finished_md(plan, src, tmp_path)
    start = builder.md_start(plan, dense, tmp_path)
    assert start.get_volume() / len(start) == pytest.approx(2.5)
    # the same fluid, scaled isotropically: fractional positions kept
    np.testing.assert_allclose(start.get_scaled_positions(), source_atoms.get_scaled_positions() % 1.0, atol=1e-9)
    text = builder.md_input_text(plan, dense, tmp_path)
    assert "TIMECON 5" in text and "SEED 6" in text
    assert "TIMECON 10" in builder.md_input_text(plan, src, tmp_path)  # the plan's default
    with pytest.raises(ValueError, match="work directory"):
        builder.md_start(plan, dense)
    with pytest.raises(ValueError, match="no fluid target"):
        plan.fluid("fluid_p999")


def test_md_running_follows_the_pid_file(tmp_path):
    import os
    import socket

    (tmp_path / "md.out").write_text("MD step 3\n")  # unfinished and fresh: running by the file times
    assert builder._md_running(tmp_path, stale_s=900)
    pid = tmp_path / "md.pid"
    pid.write_text(f"{socket.gethostname()} 999999999\n")  # no such process
    assert not builder._md_running(tmp_path, stale_s=900)
    pid.write_text(f"{socket.gethostname()} {os.getpid()}\n")  # alive, but not CP2K (a reused id)
    assert not builder._md_running(tmp_path, stale_s=900)
    pid.write_text(f"another-host {os.getpid()}\n")  # another machine: back to the file times
    assert builder._md_running(tmp_path, stale_s=900)
    assert not builder._md_running(tmp_path, stale_s=-1)


def test_per_target_first_segment():
    import dataclasses

    early = builder.FluidTarget(100.0, 2.8, 5, first_segment_fs=1.5)
    plan = dataclasses.replace(_tiny_plan(), fluids=(early, builder.FluidTarget(120.0, 2.6, 7)))
    assert plan.first_segment_for(early) == 1.5 and plan.md_for(early).steps == 3  # 3 steps of 0.5 fs
    assert plan.first_segment_for(plan.fluids[1]) == plan.first_segment_fs == 2.0
    assert plan.md_for(plan.fluids[1]).steps == 4


def test_md_scf_check_tolerates_only_the_initial_scf(tmp_path):
    out = tmp_path / "md.out"
    ini = " MD_INI| MD initialization\n"
    bad = " *** WARNING in qs_scf.F:601 :: SCF run NOT converged ***\n"
    ok = " *** SCF run converged in     8 steps ***\n"
    out.write_text(bad + ini + ok * 3)
    builder._check_md_scf(out, "c")  # only the start-up SCF: kept
    for text in (ini + ok + bad, bad + ini + bad, bad + bad + ini):
        out.write_text(text)
        with pytest.raises(DFTError, match="did not converge"):
            builder._check_md_scf(out, "c")


# --------------------------------------------------------------------------- large replicated cells
class _FakeCP2K:
    """Stands in for ``run_cp2k``: an MD whose atoms random-walk, single points with a smooth ELF.

    The MD writes what CP2K writes (position frames, energy lines, a restart file with the
    step and time reached) and continues from ``EXT_RESTART``; the single point writes an
    output with an energy and a stress tensor and the ELF/density cubes.
    """

    def __init__(self, step_a=1.0):
        self.step_a = step_a
        self.md_runs = 0
        self.sp_runs = 0

    @staticmethod
    def _block(text, name):
        m = re.search(rf"&{name}\n(.*?)&END {name}", text, re.S)
        return [ln.split() for ln in m.group(1).strip().splitlines()]

    def __call__(self, text, workdir, *, case, project=None, executable=None, threads=1, ranks=1,
                 check_scf=True, input_name=None, output_name=None):
        from ase import Atoms

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / (input_name or f"{project}.inp")).write_text(text)
        out = workdir / (output_name or f"{project}.out")
        cell = np.array([[float(x) for x in row[1:4]] for row in self._block(text, "CELL")[:3]])
        if "RUN_TYPE MD" in text:
            self.md_runs += 1
            steps = int(re.search(r"STEPS\s+(\d+)", text).group(1))
            dt = float(re.search(r"TIMESTEP\s+(\S+)", text).group(1))
            if "EXT_RESTART" in text:
                r = (workdir / "md-1.restart").read_text()
                step0 = int(re.search(r"STEP_START_VAL\s+(\d+)", r).group(1))
                t0 = float(re.search(r"TIME_START_VAL\s+(\S+)", r).group(1))
                pos = {s: x for s, _, x in cp2k.read_xyz_frames(workdir / "md-pos-1.xyz")}[step0]
            else:
                step0, t0 = 0, 0.0
                pos = np.array([[float(x) for x in row[1:4]] for row in self._block(text, "COORD")])
                (workdir / "md-1.ener").write_text("# Step Nr. Time[fs]\n")
                (workdir / "md-pos-1.xyz").write_text("")
                self._frame(workdir, 0, 0.0, pos)
            for k in range(1, steps + 1):
                rng = np.random.default_rng(1000 * self.md_runs + step0 + k)
                pos = pos + rng.normal(0, self.step_a, pos.shape)
                self._frame(workdir, step0 + k, t0 + k * dt, pos)
            (workdir / "md-1.restart").write_text(
                f"STEP_START_VAL {step0 + steps}\nTIME_START_VAL {t0 + steps * dt}\n")
            out.write_text("MD done\n PROGRAM ENDED AT now\n")
            return out
        self.sp_runs += 1
        pos = np.array([[float(x) for x in row[1:4]] for row in self._block(text, "COORD")])
        atoms = Atoms("H" * len(pos), positions=pos, cell=cell, pbc=True)
        from elfcore.grid import field_from_atoms
        from elfcore.io import write_field

        shape = (8, 8, 8)
        frac = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1)
        elf = 0.5 + 0.4 * np.sin(2 * np.pi * frac[..., 0]) * np.cos(2 * np.pi * frac[..., 1])
        write_field(field_from_atoms(elf, atoms, name="elf"), workdir / "sp-ELF_S1-1_0.cube", format="cube")
        write_field(field_from_atoms(0.1 + 0 * elf, atoms, name="rho"), workdir / "sp-ELECTRON_DENSITY-1_0.cube",
                    format="cube")
        out.write_text(
            " CP2K| version string:                                          CP2K version 2099.1 (fake)\n"
            " SCF run converged in    12 steps\n"
            " ENERGY| Total FORCE_EVAL ( QS ) energy [a.u.]:              -1.000000000000\n"
            " STRESS| Analytical stress tensor [GPa]\n"
            " STRESS|                        x                   y                   z\n"
            " STRESS|      x        1.00000000000E+02   0.0000000000E+00   0.0000000000E+00\n"
            " STRESS|      y        0.00000000000E+00   1.0000000000E+02   0.0000000000E+00\n"
            " STRESS|      z        0.00000000000E+00   0.0000000000E+00   1.0000000000E+02\n")
        return out

    @staticmethod
    def _frame(workdir, step, t, pos):
        with open(workdir / "md-pos-1.xyz", "a") as f:
            f.write(f"{len(pos)}\n i = {step}, time = {t:.3f}, E = -1.0\n")
            f.writelines(f"H {x:.8f} {y:.8f} {z:.8f}\n" for x, y, z in pos)
        with open(workdir / "md-1.ener", "a") as f:
            f.write(f"{step} {t:.3f} 0.1 1500.0 -30.0 -29.9 1.0\n")


def _large_plan():
    import dataclasses

    small = builder.FluidTarget(100.0, 2.8, 5)
    large = builder.FluidTarget(100.0, 2.8, 6, start_from=small.name, replicas=2, start_time_fs=3.0, tag="8x",
                                timestep_fs=0.5, equilibration_fs=2.0, sample_interval_fs=1.0, n_snapshots=2)
    return dataclasses.replace(_tiny_plan(), fluids=(small,), large_fluids=(large,), n_snapshots=1,
                               equilibration_fs=3.0), small, large


def test_large_cell_plan_names_and_times():
    plan, small, large = _large_plan()
    assert large.name == "fluid8x_p100" and plan.fluid("fluid8x_p100") is large
    names = [(c.name, c.role) for c in builder.plan_cases(plan)]
    assert names == [("fluid_p100_t0003", "train"), ("fluid8x_p100_t0002", "train"),
                     ("fluid8x_p100_t0003", "test")]
    assert plan.snapshot_times_fs(large) == [2.0, 3.0] and plan.length_for(large) == 3.0
    md = plan.md_for(large)
    assert md.timestep_fs == 0.5 and md.steps == 6 and plan.first_segment_for(large) == 3.0
    with pytest.raises(ValueError, match="replicas"):
        builder.FluidTarget(100.0, 2.8, 6, replicas=2)  # a replica needs a source
    with pytest.raises(ValueError, match="tag"):
        builder.FluidTarget(100.0, 2.8, 6, tag="a_b")
    with pytest.raises(ValueError, match="not in the plan"):
        builder.ReferencePlan(fluids=())  # the default large cells start from the 64-atom MDs
    # the shipped plan: 512-atom cells at the paper's three pressures, three snapshots each
    default = builder.ReferencePlan()
    big = [c for c in builder.plan_cases(default) if c.name.startswith("fluid512_")]
    assert len(big) == 9 and sum(c.role == "train" for c in big) == 3
    assert sorted({c.target.pressure_gpa for c in big}) == [76.0, 115.1, 138.5]


def test_large_cell_build_resume_and_checks_with_fake_dft(tmp_path, monkeypatch):
    from elfcore.io import read_case
    from elfcore.reference.checks import set_pressures, summary_table

    plan, small, large = _large_plan()
    fake = _FakeCP2K()
    monkeypatch.setattr(builder._cp2k, "run_cp2k", fake)
    data, work = tmp_path / "data", tmp_path / "work"
    res = builder.build(plan, data, work, only=["fluid8x_*"], threads=1, progress=False)
    assert res["written"] == ["fluid8x_p100_t0002", "fluid8x_p100_t0003"]
    md_dir = work / "md" / "fluid8x_p100"
    # the start is the 2x2x2 replica of the source MD's frame at start_time_fs
    start = cp2k.read_xyz_frames(md_dir / "md-pos-1.xyz")[0][2]
    src = {t: x for _, t, x in cp2k.read_xyz_frames(work / "md" / "fluid_p100" / "md-pos-1.xyz")}[3.0]
    assert len(start) == 8 * len(src)
    a = read_case(data / "fluid8x_p100_t0002.nc").attrs
    assert a["natoms"] == 64 and a["role"] == "train" and a["time_fs"] == pytest.approx(2.0)
    assert a["md_step"] == 4 and a["md_timestep_fs"] == pytest.approx(0.5)
    assert a["replicas"] == 2 and a["source_md"] == "fluid_p100"
    assert a["replica_decorrelated"] == 1 and a["replica_sk_ratio"] < 1.6  # random walk: period gone
    assert np.isfinite(a["rdf_rms_vs_source"])
    assert read_case(data / "fluid8x_p100_t0003.nc").attrs["role"] == "test"
    # the first MD run stopped at the first snapshot; the second case continued it
    assert "STEPS 2" in (md_dir / "md_restart.inp").read_text()
    assert [int(s) for s in cp2k.read_ener(md_dir / "md-1.ener")[:, 0]] == list(range(7))
    # resume: nothing recomputed
    runs = (fake.md_runs, fake.sp_runs)
    res = builder.build(plan, data, work, only=["fluid8x_*"], threads=1, progress=False)
    assert res["written"] == [] and (fake.md_runs, fake.sp_runs) == runs
    # an interrupted build (second case file missing) resumes without rerunning the MD
    (data / "fluid8x_p100_t0003.nc").unlink()
    res = builder.build(plan, data, work, only=["fluid8x_*"], threads=1, progress=False)
    assert res["written"] == ["fluid8x_p100_t0003"] and fake.md_runs == runs[0] and fake.sp_runs == runs[1] + 1
    # the summary lists the checks, and the large cells form their own pressure set
    rows = {r["name"]: r for r in summary_table(data)}
    assert rows["fluid8x_p100_t0002"]["replica_sk_ratio"] == pytest.approx(a["replica_sk_ratio"])
    sets = set_pressures(list(rows.values()))
    assert [(s["target_gpa"], s["natoms"], s["n"]) for s in sets] == [(100.0, 64, 2)]


def test_frozen_replica_fails_the_decorrelation_check(tmp_path, monkeypatch):
    plan, small, large = _large_plan()
    monkeypatch.setattr(builder._cp2k, "run_cp2k", _FakeCP2K(step_a=0.0))  # atoms never move
    work = tmp_path / "work"
    builder.run_md(plan, large, work, min_time_fs=2.0)
    checks = builder.replica_checks(plan, large, work, 2.0)
    assert not checks["sk_decorrelated"] and checks["sk_ratio"] > 1e6


def test_md_checkpoint_save_and_restore_continue_the_run(tmp_path, monkeypatch):
    plan, small, large = _large_plan()
    fake = _FakeCP2K()
    monkeypatch.setattr(builder._cp2k, "run_cp2k", fake)
    work, store = tmp_path / "work", tmp_path / "checkpoints"
    builder.run_md(plan, large, work, min_time_fs=2.0)
    names = [small.name, large.name]
    saved = builder.save_md_checkpoints(work, store, names)
    assert [(s["name"], s["time_fs"]) for s in saved] == [("fluid_p100", 3.0), ("fluid8x_p100", 2.0)]
    assert sorted(p.name for p in (store / large.name).iterdir()) == [
        "md-1.ener", "md-1.restart", "md-pos-1.xyz.gz", "md.inp"]
    assert builder.save_md_checkpoints(work, store, names) == []  # nothing newer
    # another machine: restore into an empty work folder and continue to the last snapshot
    other = tmp_path / "other"
    assert len(builder.restore_md_checkpoints(store, other, names)) == 2
    assert builder.restore_md_checkpoints(store, other, names) == []  # already there
    runs = fake.md_runs
    builder.run_md(plan, large, other)
    assert fake.md_runs == runs + 1  # one continuation, not a new start
    e = cp2k.read_ener(other / "md" / large.name / "md-1.ener")
    assert [int(s) for s in e[:, 0]] == list(range(7)) and e[-1, 1] == pytest.approx(3.0)
