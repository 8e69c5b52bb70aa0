"""CP2K runner and parsers: error paths with fake binaries, and one tiny real run."""
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from elfcore.errors import DFTError, FormatError
from elfcore.reference import cp2k
from elfcore.reference.builder import write_case_file


def _fake_cp2k(tmp_path: Path, body: str, code: int = 0) -> str:
    """A shell script that behaves like cp2k: parses -o OUT and writes ``body`` there."""
    script = tmp_path / "fake_cp2k"
    script.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do if [ "$1" = "-o" ]; then OUT="$2"; fi; shift; done\n'
        f"cat > \"$OUT\" <<'EOF'\n{body}\nEOF\n"
        f"exit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_missing_binary_names_case(h4, tiny_settings, tmp_path):
    with pytest.raises(DFTError, match="not found"):
        cp2k.run_cp2k(cp2k.single_point_input(h4, tiny_settings), tmp_path, case="c1",
                      executable="no-such-cp2k-binary")


def test_unconverged_scf_names_case_and_output(h4, tiny_settings, tmp_path):
    exe = _fake_cp2k(tmp_path, " *** SCF run NOT converged ***\n PROGRAM ENDED AT  now")
    with pytest.raises(DFTError) as err:
        cp2k.run_cp2k(cp2k.single_point_input(h4, tiny_settings, project="sp"), tmp_path / "run",
                      case="fluid_x", executable=exe)
    assert "fluid_x" in str(err.value) and "did not converge" in str(err.value)
    assert str(tmp_path / "run" / "sp.out") in str(err.value)


def test_crash_names_case_and_output(h4, tiny_settings, tmp_path):
    exe = _fake_cp2k(tmp_path, " something went wrong", code=3)
    with pytest.raises(DFTError, match=r"case c2: CP2K exited with code 3.*sp\.out"):
        cp2k.run_cp2k(cp2k.single_point_input(h4, tiny_settings, project="sp"), tmp_path / "run",
                      case="c2", executable=exe)


def test_truncated_output_is_an_error(h4, tiny_settings, tmp_path):
    exe = _fake_cp2k(tmp_path, " *** SCF run converged in 5 steps ***")
    with pytest.raises(DFTError, match="incomplete"):
        cp2k.run_cp2k(cp2k.single_point_input(h4, tiny_settings, project="sp"), tmp_path / "run",
                      case="c3", executable=exe)


def test_abort_is_an_error(tmp_path):
    out = tmp_path / "x.out"
    out.write_text(" *******\n *   [ABORT]   *\n *  basis set not found *\n PROGRAM ENDED AT x\n")
    with pytest.raises(DFTError, match="aborted"):
        cp2k.check_output(out, case="c4")


def test_parse_output_without_energy(tmp_path):
    out = tmp_path / "x.out"
    out.write_text("nothing here\n")
    with pytest.raises(FormatError):
        cp2k.parse_output(out)


def test_read_ener_and_xyz(tmp_path):
    (tmp_path / "md-1.ener").write_text(
        "#     Step Nr.          Time[fs]        Kin.[a.u.]          Temp[K]            Pot.[a.u.]        Cons Qty[a.u.]        UsedTime[s]\n"
        "         0            0.000000         0.4         1500.0       -35.0       -34.6         0.0\n"
        "         1            1.000000         0.5         1600.0       -35.1       -34.6         2.5\n"
    )
    e = cp2k.read_ener(tmp_path / "md-1.ener")
    assert e.shape == (2, 7) and e[1, 3] == 1600.0
    (tmp_path / "pos.xyz").write_text(
        "2\n i =        0, time =        0.000, E =       -35.0\nH 0 0 0\nH 0.74 0 0\n"
        "2\n i =        5, time =        5.000, E =       -35.0\nH 0 0 0.1\nH 0.74 0 0.1\n"
        "2\n i =        6, time =        6.000, E =       -35.0\nH 0 0 0.1\n"  # partly written
    )
    frames = cp2k.read_xyz_frames(tmp_path / "pos.xyz")
    assert [f[0] for f in frames] == [0, 5] and frames[1][2][1, 2] == pytest.approx(0.1)


def test_ideal_gas_pressure():
    # 64 atoms, 1500 K, 169 Å^3 -> N k T / V = 64 * 1.380649e-23 * 1500 / 169e-30 Pa
    expected = 64 * 1.380649e-23 * 1500 / 169e-30 / 1e9
    assert cp2k.ideal_gas_pressure_gpa(64, 1500.0, 169.0) == pytest.approx(expected, rel=1e-6)


@pytest.mark.cp2k
def test_tiny_real_run_parse_and_case_roundtrip(h4, tiny_settings, tmp_path):
    """A 4-atom single point (seconds): energy, stress, forces, cubes, netCDF round trip."""
    try:
        cp2k.find_cp2k()
    except DFTError:
        pytest.skip("cp2k not installed")
    from elfcore.grid import case_field, make_case
    from elfcore.io import read_case, read_field

    out = cp2k.run_cp2k(cp2k.single_point_input(h4, tiny_settings, project="sp"), tmp_path, case="tiny",
                        threads=1)
    res = cp2k.parse_output(out)
    assert res["converged"] and res["energy_ha"] < -2.0
    assert res["stress_gpa"].shape == (3, 3)
    assert np.allclose(res["stress_gpa"], res["stress_gpa"].T, atol=1e-3)
    assert res["pressure_gpa"] == pytest.approx(np.trace(res["stress_gpa"]) / 3)
    assert res["forces_ev_a"].shape == (4, 3)
    assert res["cp2k_version"].startswith("CP2K version")
    elf = read_field(next(tmp_path.glob("sp-ELF*.cube")), format="cube", name="elf")
    rho = read_field(next(tmp_path.glob("sp-ELECTRON_DENSITY*.cube")), format="cube", name="rho")
    assert elf.shape == rho.shape and elf.shape[0] >= 16
    assert float(elf.min()) >= 0 and float(elf.max()) <= 1.0 + 1e-6
    # the density integrates to the number of valence electrons (4 H -> 4 e)
    vox = abs(np.linalg.det(h4.cell[:])) / rho.size
    assert float(rho.sum()) * vox == pytest.approx(4.0, rel=1e-3)
    # own cube reader agrees with elfcore.io
    values, cell, _, numbers = cp2k.read_cube(next(tmp_path.glob("sp-ELF*.cube")))
    assert np.allclose(values, elf.values) and np.allclose(cell, h4.cell[:], atol=1e-5)
    case = make_case(h4, {"elf_ref": elf.values, "rho_ref": rho.values},
                     attrs={"code": "CP2K", "pressure_gpa": res["pressure_gpa"], "role": "test"})
    path = write_case_file(case, tmp_path / "data" / "tiny.nc")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["tiny.nc"]  # no temp file left
    back = read_case(path)
    assert np.abs(case_field(back, "elf_ref").values - elf.values).max() <= 7.7e-6
    assert np.abs(case_field(back, "rho_ref").values - rho.values).max() <= float(rho.max()) / 65534
    assert back.attrs["pressure_gpa"] == pytest.approx(res["pressure_gpa"])
    assert back["elf_ref"].dtype.kind == "f"


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    from elfcore.grid import make_case
    from ase import Atoms

    case = make_case(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[3, 3, 3], pbc=True),
                     {"elf_ref": np.full((4, 4, 4), 0.5), "rho_ref": np.full((4, 4, 4), 0.1)})

    def boom(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("elfcore.io.write_case", boom)
    with pytest.raises(OSError):
        write_case_file(case, tmp_path / "x.nc")
    assert list(tmp_path.iterdir()) == []


def test_read_input_structure_roundtrip(h4, tiny_settings, tmp_path):
    path = tmp_path / "sp.inp"
    path.write_text(cp2k.single_point_input(h4, tiny_settings))
    atoms = cp2k.read_input_structure(path)
    assert np.allclose(atoms.get_positions(), h4.get_positions())
    assert np.allclose(atoms.cell[:], h4.cell[:])
    path.write_text("&GLOBAL\n&END GLOBAL\n")
    with pytest.raises(FormatError):
        cp2k.read_input_structure(path)


def test_md_drift_per_time_step_segment(tmp_path):
    from elfcore.reference.checks import md_drift

    # 10 steps of 1 fs with a conserved quantity rising 1 mHa per step, then 10 steps of 0.5 fs flat;
    # step 11 of an earlier, interrupted run is written before the continuation and must be ignored
    rows, t, cons = [], 0.0, -30.0
    for step in range(11):
        rows.append((step, t, 0.1, 1500.0, -30.5, cons, 1.0))
        t, cons = t + 1.0, cons + 1e-3
    rows.append((11, 11.0, 0.1, 9999.0, -30.5, 5.0, 1.0))
    t, cons = 10.0, rows[10][5]
    for step in range(11, 21):
        t += 0.5
        rows.append((step, t, 0.1, 1400.0, -30.5, cons, 2.0))
    (tmp_path / "md-1.ener").write_text(
        "#  Step Nr. Time[fs] Kin.[a.u.] Temp[K] Pot.[a.u.] Cons Qty[a.u.] UsedTime[s]\n"
        + "".join(" ".join(f"{v}" for v in r) + "\n" for r in rows))
    d = md_drift(tmp_path, natoms=64)
    assert d["steps"] == 20 and d["time_fs"] == pytest.approx(15.0)
    first, second = d["segments"]
    assert first["timestep_fs"] == 1.0 and second["timestep_fs"] == 0.5
    ev = 27.211386245988
    assert first["drift_mev_per_atom_per_ps"] == pytest.approx(1e-3 * ev * 1e6 / 64, rel=1e-6)
    assert second["drift_mev_per_atom_per_ps"] == pytest.approx(0.0, abs=1e-6)
    assert second["mean_temperature_k"] == pytest.approx(1400.0) and second["steps"] == 10


def test_rerun_starts_a_fresh_output_file(h4, tiny_settings, tmp_path):
    # CP2K appends to an existing output: the abort of an earlier try must not fail the rerun
    run = tmp_path / "run"
    run.mkdir()
    (run / "sp.out").write_text(" * [ABORT] old failure\n")
    exe = _fake_cp2k(tmp_path, " *** SCF run converged in 5 steps ***\n PROGRAM ENDED AT  now")
    script = Path(exe)
    script.write_text(script.read_text().replace('cat > "$OUT"', 'cat >> "$OUT"'))  # appends, like CP2K
    out = cp2k.run_cp2k(cp2k.single_point_input(h4, tiny_settings, project="sp"), run, case="c3", executable=exe)
    assert "ABORT" not in out.read_text()


def test_summary_tables_markdown():
    from elfcore.commands.reference import _markdown, _md_markdown

    md = _md_markdown([{"md": "fluid_p076", "volume_per_atom": 3.05, "timestep_fs": 0.5, "start_fs": 250.0,
                        "time_fs": 450.0, "steps": 400, "drift_mev_per_atom_per_ps": -3.2, "std_mev_per_atom": 0.51,
                        "mean_temperature_k": 1540.0, "std_temperature_k": 165.0, "mean_s_per_step": 16.8}])
    lines = md.splitlines()
    assert len(lines) == 3 and lines[1] == "|" + "---|" * 9
    assert lines[2] == "| fluid_p076 | 3.05 | 0.5 | 250–450 | 400 | -3 | 0.5 | 1540 ± 165 | 16.8 |"
    case = _markdown([{"name": "c", "family": "cubic", "role": "test", "natoms": 8, "volume_per_atom": 2.5,
                       "pressure_gpa": 105.3, "pressure_static_gpa": 105.3, "pressure_kinetic_gpa": 0.0,
                       "temperature_k": 0.0, "grid": [30, 30, 30], "cpu_time_s": 22.8}])
    assert case.splitlines()[2] == "| c | cubic | test | 8 | 2.500 | 105.3 | 105.3 | 0.0 | 0 | 30×30×30 | 23 |"


def test_pid_file_only_while_cp2k_runs(h4, tiny_settings, tmp_path):
    body = "PROGRAM ENDED AT 2026"
    script = tmp_path / "fake_cp2k"
    seen = tmp_path / "seen_pid"
    script.write_text(
        "#!/bin/sh\n"
        "for i in 1 2 3 4 5 6 7 8 9 10; do ls *.pid >/dev/null 2>&1 && break; sleep 0.3; done\n"
        f"cat *.pid > {seen}\n"
        'while [ $# -gt 0 ]; do if [ "$1" = "-o" ]; then OUT="$2"; fi; shift; done\n'
        f"echo '{body}' > \"$OUT\"\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    run = tmp_path / "run"
    cp2k.run_cp2k(cp2k.single_point_input(h4, tiny_settings), run, case="c1", executable=str(script))
    import socket

    host, pid = seen.read_text().split()
    assert host == socket.gethostname() and int(pid) > 0
    assert not list(run.glob("*.pid"))


def test_set_pressures_against_target():
    from elfcore.commands.reference import _sets_markdown
    from elfcore.reference.checks import set_pressures

    rows = [{"family": "fluid", "target_pressure_gpa": 100.0, "pressure_gpa": p, "temperature_k": t}
            for p, t in ((95.0, 1500.0), (105.0, 1600.0), (92.0, 1400.0))]
    rows += [{"family": "fluid", "target_pressure_gpa": 50.0, "pressure_gpa": 40.0, "temperature_k": 1500.0},
             {"family": "cubic", "target_pressure_gpa": float("nan"), "pressure_gpa": 7.0, "temperature_k": 0.0}]
    sets = set_pressures(rows)
    assert [s["target_gpa"] for s in sets] == [50.0, 100.0]
    low, mid = sets
    assert mid["n"] == 3 and mid["mean_gpa"] == pytest.approx(97.333, abs=1e-3) and mid["within"]
    assert mid["std_gpa"] == pytest.approx(np.std([95, 105, 92], ddof=1))
    assert low["deviation"] == pytest.approx(-0.2) and not low["within"]
    text = _sets_markdown(sets)
    assert "50 GPa: 1 snapshots" in text and "outside ±10 %" in text and "-2.7 % of the target, within" in text
