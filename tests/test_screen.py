"""elfcore.screen and `elfcore screen`: inputs, database, resume, CSV, plot, and a real Dask LocalCluster run."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

import elfcore.zoo as Z
from elfcore.errors import ElfcoreError
from elfcore.screen import (
    ScreenSettings,
    check_frame,
    connect,
    expand_inputs,
    export_csv,
    parse_input,
    plot_results,
    read_records,
    results_dataset,
    screen,
    screen_frame,
)
from elfcore.screen.database import check_metadata, done_frames, write_frame
from elfcore.screen.inputs import WHOLE_FILE

CASE = Path(__file__).resolve().parent.parent / "assets" / "data" / "fluid_p076_t0250.nc"
BASELINE_SPEC = "zoo:rcut=3.0,lmax=2"
HAVE_BASELINE = Z.zoo_path(*Z.BASELINE).exists()
HAVE_CRYSTALS = Z.crystal_model_path().exists()
#: coarse grid and no spline refinement: a frame takes well under a second of CPU
FAST = ScreenSettings(spacing=0.4, upsample=1, device="cpu")

needs_case = pytest.mark.skipif(not CASE.exists(), reason=f"shipped case {CASE.name} not in assets/data")
needs_model = pytest.mark.skipif(not HAVE_BASELINE, reason="baseline zoo model not in assets/models")


def _h_frames(n, rng, cell=4.0):
    """n periodic H16 frames (random positions in a cube), time_fs in info, a stress on the last."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for i in range(n):
        a = Atoms("H16", positions=rng.random((16, 3)) * cell, cell=np.eye(3) * cell, pbc=True)
        a.info["time_fs"] = 0.5 * i
        frames.append(a)
    frames[-1].calc = SinglePointCalculator(frames[-1], stress=np.array([-0.1, -0.1, -0.1, 0, 0, 0]))
    return frames


@pytest.fixture
def traj(tmp_path, rng):
    path = tmp_path / "md.extxyz"
    write(path, _h_frames(6, rng), format="extxyz")
    return path


# ----------------------------------------------------------------------------------------------- inputs
def test_parse_input_index_syntax():
    assert parse_input("a.xyz@2:10:3") == ("a.xyz", slice(2, 10, 3))
    assert parse_input("a.xyz@::2") == ("a.xyz", slice(None, None, 2))
    assert parse_input("a.xyz@-1") == ("a.xyz", -1)
    assert parse_input("a.xyz") == ("a.xyz", slice(None))
    with pytest.raises(ElfcoreError, match="not an index"):
        parse_input("a.xyz@x:y")


def test_parse_input_keeps_an_existing_path_with_at(tmp_path):
    p = tmp_path / "run@1"
    p.write_text("")
    assert parse_input(str(p)) == (str(p), slice(None))


def test_expand_slices_keep_file_indices(traj):
    frames = list(expand_inputs([f"{traj}@1:6:2"]))
    assert [f.index for f in frames] == [1, 3, 5]
    assert all(f.source == str(traj.resolve()) and f.reason is None for f in frames)
    assert [f.meta["time_fs"] for f in frames] == [0.5, 1.5, 2.5]
    # the stored stress of the last frame gives its pressure: −trace/3 in GPa
    assert frames[-1].meta["pressure_gpa"] == pytest.approx(0.1 * 160.21766208)
    assert [f.index for f in expand_inputs([f"{traj}@-2"])] == [4]
    (bad,) = expand_inputs([f"{traj}@9"])
    assert bad.atoms is None and "out of range" in bad.reason and "6 frame" in bad.reason
    # keys relative to a folder: a database that travels with its inputs
    assert {f.source for f in expand_inputs([str(traj)], relative_to=traj.parent.parent)} == {
        f"{traj.parent.name}/{traj.name}"}
    (missing,) = expand_inputs([str(traj.parent / "nope.xyz")], relative_to=traj.parent)
    assert missing.source == "nope.xyz" and missing.atoms is None


def test_expand_directories_and_globs(tmp_path, rng):
    d = tmp_path / "set"
    d.mkdir()
    for i, a in enumerate(_h_frames(3, rng)):
        write(d / f"s{i}.vasp", a, format="vasp")
    (d / ".hidden").write_text("x")
    (d / "sub").mkdir()
    from_dir = list(expand_inputs([d]))
    assert [Path(f.source).name for f in from_dir] == ["s0.vasp", "s1.vasp", "s2.vasp"]
    assert all(f.index == 0 and f.reason is None for f in from_dir)
    from_glob = list(expand_inputs([str(d / "s[12].vasp")]))
    assert [Path(f.source).name for f in from_glob] == ["s1.vasp", "s2.vasp"]
    (none,) = expand_inputs([str(d / "*.cif")])
    assert none.index == WHOLE_FILE and "no file matches" in none.reason


def test_bad_frames_are_reported_with_a_reason(tmp_path, rng):
    mixed = tmp_path / "mixed.extxyz"
    good = _h_frames(1, rng)[0]
    water = Atoms("H2O", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], cell=np.eye(3) * 4, pbc=True)
    slab = good.copy()
    slab.pbc = [True, True, False]
    write(mixed, [good, water, slab], format="extxyz")
    molecule = tmp_path / "mol.xyz"
    write(molecule, Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]), format="xyz")
    junk = tmp_path / "junk.extxyz"
    junk.write_text("this is not a structure\n")
    frames = list(expand_inputs([mixed, molecule, junk]))
    reasons = [(Path(f.source).name, f.index, f.reason) for f in frames]
    assert reasons[0] == ("mixed.extxyz", 0, None)
    assert reasons[1][2] == "non-hydrogen atoms (O); the model knows H only"
    assert reasons[2][2].startswith("not periodic: pbc=[True, True, False]")
    assert reasons[3][0] == "mol.xyz" and "no cell" in reasons[3][2]
    assert reasons[4][:2] == ("junk.extxyz", WHOLE_FILE) and reasons[4][2].startswith("unreadable")
    # a given cell makes the plain-xyz frame screenable
    (fixed,) = expand_inputs([molecule], cell=np.eye(3) * 3.0)
    assert fixed.reason is None and fixed.atoms.pbc.all()


def test_check_frame_accepts_periodic_hydrogen(rng):
    assert check_frame(_h_frames(1, rng)[0]) is None
    assert check_frame(Atoms()) == "no atoms"


def test_settings_validate():
    with pytest.raises(ElfcoreError, match="spacing=0"):
        ScreenSettings(spacing=0)
    with pytest.raises(ElfcoreError, match="unknown screen settings"):
        ScreenSettings.from_dict({"spacing": 0.1, "spaceing": 0.2})
    assert ScreenSettings.from_dict(FAST.to_dict()) == FAST


# --------------------------------------------------------------------------------------------- database
def _fake_rows(db, n, *, source="/data/md.xyz", status="ok"):
    for i in range(n):
        a = Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]], cell=np.eye(3) * 3, pbc=True)
        rec = {"source": source, "frame": i, "status": status, "phi": 0.2 + 0.01 * i, "phi_std": 0.005,
               "threshold_1d": 0.3, "threshold_2d": 0.25 + 0.01 * i, "threshold_3d": 0.2 + 0.01 * i,
               "molecularity": 0.7, "pressure_gpa": 100.0 - i, "phi_members": [0.2, None, 0.21],
               "grid": [10, 10, 10]}
        if status != "ok":
            rec = {"source": source, "frame": i, "status": status, "reason": "boom"}
        write_frame(db, a, rec)


def test_database_rows_keys_and_resume_set(tmp_path):
    db = connect(tmp_path / "r.db")
    _fake_rows(db, 3)
    _fake_rows(db, 2, source="/data/other.xyz", status="failed")
    write_frame(db, None, {"source": "/data/junk", "frame": WHOLE_FILE, "status": "skipped", "reason": "unreadable"})
    # failed rows are computed again by a re-run; ok and skipped rows are not
    assert done_frames(db) == {("/data/md.xyz", 0), ("/data/md.xyz", 1), ("/data/md.xyz", 2),
                               ("/data/junk", WHOLE_FILE)}
    # writing a key again replaces its row instead of adding one
    write_frame(db, None, {"source": "/data/other.xyz", "frame": 1, "status": "ok", "phi": 0.3})
    rows = read_records(db)
    assert len(rows) == 6
    assert [(r["source"], r["frame"]) for r in rows][:3] == [("/data/junk", -1), ("/data/md.xyz", 0),
                                                             ("/data/md.xyz", 1)]
    other = {r["frame"]: r for r in rows if r["source"] == "/data/other.xyz"}
    assert other[1]["status"] == "ok" and other[0]["status"] == "failed"
    first = next(r for r in rows if r["source"] == "/data/md.xyz")
    assert first["grid"] == "10x10x10" and np.isnan(first["data"]["phi_members"][1])
    assert first["n_atoms"] == 2 and first["volume_a3"] == pytest.approx(27.0)


def test_metadata_refuses_another_run(tmp_path):
    db = tmp_path / "r.db"
    run = {"model": "zoo:x", "model_sha256": "abc", "settings": FAST.to_dict(), "elfcore_version": "0.1.0"}
    check_metadata(db, run)
    check_metadata(db, {**run, "elfcore_version": "9.9"})  # a newer elfcore may resume
    with pytest.raises(ElfcoreError, match="spacing"):
        check_metadata(db, {**run, "settings": {**FAST.to_dict(), "spacing": 0.08}})
    with pytest.raises(ElfcoreError, match="model_sha256"):
        check_metadata(db, {**run, "model_sha256": "def"})


def test_csv_export(tmp_path):
    db = tmp_path / "r.db"
    _fake_rows(db, 3)
    write_frame(db, None, {"source": "/data/junk", "frame": WHOLE_FILE, "status": "skipped",
                           "reason": "unreadable: no format"})
    out = tmp_path / "r.csv"
    assert export_csv(db, out) == 4
    with open(out, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["status"] for r in table] == ["skipped", "ok", "ok", "ok"]
    assert table[0]["reason"] == "unreadable: no format" and table[0]["phi"] == ""
    assert [float(r["phi"]) for r in table[1:]] == pytest.approx([0.20, 0.21, 0.22])


def test_results_dataset(tmp_path):
    db = tmp_path / "r.db"
    _fake_rows(db, 4)
    _fake_rows(db, 1, source="/data/z.xyz", status="failed")
    ds = results_dataset(db)
    assert ds.sizes["frame"] == 4 and list(ds.frame_index.values) == [0, 1, 2, 3]
    assert ds.phi.values == pytest.approx([0.20, 0.21, 0.22, 0.23])
    assert np.isnan(ds.phi_star.values).all()
    assert results_dataset(db, status=None).sizes["frame"] == 5
    atoms = connect(db).get_atoms(id=int(ds.row_id.values[0]))
    assert len(atoms) == 2


def test_read_frames_structures_in_dataset_order(tmp_path):
    from elfcore.screen import read_frames

    db = tmp_path / "r.db"
    _fake_rows(db, 2, source="/data/b.xyz")
    _fake_rows(db, 3, source="/data/a.xyz")
    _fake_rows(db, 1, source="/data/z.xyz", status="failed")
    ds, frames = read_frames(db)
    assert len(frames) == ds.sizes["frame"] == 5
    assert [(a.info["source"], a.info["frame"]) for a in frames] == list(zip(ds.source.values, ds.frame_index.values))
    assert frames[0].info["source"] == "/data/a.xyz" and all(a.pbc.all() and len(a) == 2 for a in frames)
    assert len(read_frames(db, status=None)[1]) == 6


def test_x_axis_choice(tmp_path):
    from elfcore.screen import results_dataset, x_axis

    db = tmp_path / "r.db"
    _fake_rows(db, 3)
    ds = results_dataset(db)
    name, values, label = x_axis(ds)
    assert name == "pressure" and list(values) == [100.0, 99.0, 98.0] and "GPa" in label
    assert list(x_axis(ds, "frame")[1]) == [0.0, 1.0, 2.0]
    with pytest.raises(ElfcoreError, match="time_fs"):
        x_axis(ds, "time")
    with pytest.raises(ElfcoreError, match="must be"):
        x_axis(ds, "energy")


def test_plot_writes_png(tmp_path):
    db = tmp_path / "r.db"
    _fake_rows(db, 5)
    out = plot_results(db, tmp_path / "phi.png")
    data = Path(out).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ElfcoreError, match="time_fs"):
        plot_results(db, tmp_path / "t.png", x="time")
    empty = tmp_path / "e.db"
    _fake_rows(empty, 1, status="failed")
    with pytest.raises(ElfcoreError, match="no screened frame"):
        plot_results(empty, tmp_path / "e.png")


# --------------------------------------------------------------------------------------- per-frame task
@needs_case
@pytest.mark.skipif(not HAVE_CRYSTALS, reason="zoo:crystals ensemble not in assets/models")
def test_screen_frame_ensemble_spread():
    import elfcore
    from elfcore.grid import case_atoms

    atoms = case_atoms(elfcore.read_case(CASE))
    model = Z.resolve_model(Z.CRYSTAL_SPEC)
    rec = screen_frame(atoms, model, FAST, source="x", index=0)
    assert rec["status"] == "ok" and rec["n_members"] == 3
    members = rec["phi_members"]
    assert len(members) == 3 and len(set(members)) > 1
    assert rec["phi_std"] == pytest.approx(np.std(members)) and rec["phi_std"] > 0
    assert rec["elf_spread"] > 0
    assert 0 < rec["threshold_3d"] <= rec["threshold_2d"] <= rec["threshold_1d"] < 1
    assert rec["phi"] == rec["threshold_3d"]
    assert rec["grid"] == [15, 15, 15]


@needs_model
def test_screen_frame_reports_failure_instead_of_raising(rng):
    model = Z.resolve_model(BASELINE_SPEC)
    tight = ScreenSettings(spacing=0.4, memory_budget_gb=1e-6, device="cpu")
    rec = screen_frame(_h_frames(1, rng)[0], model, tight)
    assert rec["status"] == "failed" and "memory_budget_gb" in rec["reason"]
    overlap = Atoms("H2", positions=[[0, 0, 0], [0.01, 0, 0]], cell=np.eye(3) * 3, pbc=True)
    rec = screen_frame(overlap, model, FAST)
    assert rec["status"] == "skipped" and "overlapping atoms" in rec["reason"]


# ------------------------------------------------------------------------------------ Dask integration
@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster as `elfcore screen` starts it: 2 worker processes, one thread each."""
    pytest.importorskip("distributed")
    from elfcore.screen.engine import start_client

    client, owned = start_client(workers=2, device="cpu")
    try:
        yield client.scheduler.address
    finally:
        for thing in owned:
            thing.close()


def test_local_cluster_workers_get_the_malloc_policy(cluster):
    """glibc reads MALLOC_* at process start: the workers must be spawned with them."""
    import distributed

    from elfcore.memory import WORKER_MALLOC_ENV

    with distributed.Client(cluster, timeout="20s") as client:
        seen = client.run(lambda: {k: os.environ.get(k) for k in WORKER_MALLOC_ENV})
    assert len(seen) == 2
    assert all(env == WORKER_MALLOC_ENV for env in seen.values())


@pytest.fixture
def case_traj(tmp_path):
    """Three jittered frames of the shipped 64-atom fluid case, plus a non-hydrogen frame."""
    import elfcore
    from elfcore.grid import case_atoms

    base = case_atoms(elfcore.read_case(CASE))
    rng = np.random.default_rng(7)
    frames = []
    for i in range(3):
        a = base.copy()
        a.positions += rng.normal(scale=0.03, size=a.positions.shape)
        a.info["time_fs"] = float(i)
        frames.append(a)
    bad = base.copy()
    bad.numbers[0] = 3
    frames.append(bad)
    path = tmp_path / "fluid.extxyz"
    write(path, frames, format="extxyz")
    return path, frames


@needs_case
@needs_model
@pytest.mark.timeout(900)
def test_local_cluster_end_to_end_and_resume(case_traj, cluster, tmp_path):
    import elfcore
    from elfcore.grid import field_atoms
    from elfcore.predict import predict_field
    from elfcore.topology import TopologySettings, topology_summary

    path, frames = case_traj
    db = tmp_path / "results.db"
    fields = tmp_path / "fields"
    # "interrupted" run: only the first two frames
    first = screen([f"{path}@0:2"], db, model=BASELINE_SPEC, settings=FAST, scheduler=cluster,
                   save_fields=fields, progress=False)
    assert (first["ok"], first["skipped"], first["failed"], first["workers"]) == (2, 0, 0, 2)
    ids_before = {(r["frame"]): r["id"] for r in read_records(db)}
    # the re-run computes only the missing frame and records the lithium frame with its reason
    second = screen([path], db, model=BASELINE_SPEC, settings=FAST, scheduler=cluster, save_fields=fields,
                    progress=False)
    assert (second["already_done"], second["ok"], second["skipped"], second["failed"]) == (2, 1, 1, 0)
    rows = read_records(db)
    assert [r["frame"] for r in rows] == [0, 1, 2, 3]
    assert {r["frame"]: r["id"] for r in rows if r["frame"] < 2} == ids_before  # not rewritten
    assert rows[3]["status"] == "skipped" and "non-hydrogen atoms (Li)" in rows[3]["reason"]
    assert {r["worker"] for r in rows[:3]} and all(r["model"] == BASELINE_SPEC for r in rows)
    meta = connect(db).metadata["elfcore_screen"]
    assert meta["settings"]["spacing"] == 0.4 and meta["elfcore_version"] == elfcore.__version__
    # the rows match the topology of the same predicted fields, and the fields match predict_field
    model = Z.resolve_model(BASELINE_SPEC)
    for r in rows[:3]:
        field = elfcore.read_field(r["field_file"], name="elf_pred")  # what `elfcore netval --field` reads
        np.testing.assert_allclose(field.attrs["positions"], frames[r["frame"]].positions, atol=1e-6)
        topo = topology_summary(field, TopologySettings(upsample=1), bcp=False)
        assert r["phi"] == pytest.approx(topo["networking_value"], abs=1e-9)
        assert r["threshold_1d"] == pytest.approx(topo["percolation"]["1"], abs=1e-9)
        assert r["molecularity"] == pytest.approx(topo["molecularity"], abs=1e-9)
        assert r["elf_mean"] == pytest.approx(float(field.mean()), abs=1e-6)
        direct = predict_field(field_atoms(field), model, spacing=0.4, device="cpu", progress=False).elf
        np.testing.assert_allclose(field.values, direct.values, atol=1e-5)
    # different frames give different networking values (the rows are not copies)
    assert len({round(r["phi"], 6) for r in rows[:3]}) == 3


@needs_case
@needs_model
@pytest.mark.timeout(900)
def test_cli_screen_scheduler_csv_and_plot(case_traj, cluster, tmp_path, capsys):
    from elfcore.cli import main

    path, _ = case_traj
    db = tmp_path / "cli.db"
    table = tmp_path / "cli.csv"
    argv = ["screen", f"{path}@1:", "--db", str(db), "--spacing", "0.4", "--upsample", "1", "--device", "cpu",
            "--scheduler", cluster, "--csv", str(table), "--no-progress", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["frames"], summary["ok"], summary["skipped"]) == (3, 2, 1)
    with open(table, newline="") as fh:
        lines = list(csv.DictReader(fh))
    assert [ln["frame"] for ln in lines] == ["1", "2", "3"] and float(lines[0]["phi"]) > 0
    # a different spacing into the same database is refused with exit code 1
    assert main(argv[:4] + ["--spacing", "0.3"] + argv[6:]) == 1
    assert "other settings" in capsys.readouterr().err
    png = tmp_path / "phi.png"
    assert main(["screen", "plot", str(db), "--out", str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plot"] == str(png)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_requires_db(tmp_path, capsys):
    from elfcore.cli import main

    assert main(["screen", str(tmp_path / "x.xyz")]) == 1
    assert "--db is required" in capsys.readouterr().err
    assert main(["screen", "plot", str(tmp_path / "missing.db")]) == 1
