"""Tests of ``elfcore reproduce`` (orchestration, report block, --quick end to end)."""
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from ase import Atoms

from elfcore.errors import ElfcoreError
from elfcore.grid import grid_points_frac, make_case, make_field
from elfcore.reproduce import ReproduceSettings, report, runs

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "data"


def _elf_like(atoms, shape):
    """A smooth ELF-like field in [0, 1] determined by the atoms (test input only)."""
    from ase.geometry import get_distances

    pts = grid_points_frac(shape) @ atoms.cell[:]
    _, d = get_distances(pts, atoms.get_positions(), cell=atoms.cell, pbc=True)
    dens = np.exp(-(d**2) / (2 * 0.35**2)).sum(1)
    return (1 / (1 + np.exp(-3 * (dens - 0.6)))).reshape(shape)


def _synthetic_case(path, rng, *, family, role, pressure, n=12, L=3.6, shape=(12, 12, 12)):
    from elfcore.io import write_case

    atoms = Atoms("H" * n, scaled_positions=rng.random((n, 3)), cell=np.eye(3) * L, pbc=True)
    ds = make_case(atoms, {"elf_ref": _elf_like(atoms, shape)},
                   attrs={"family": family, "role": role, "pressure_gpa": pressure, "md_step": 0})
    write_case(ds, path)
    return path


def _small_shipped_cases():
    """The two smallest shipped cases (grid ≤ 40³), if shipped; the first one is used for training."""
    if not ASSETS.is_dir():
        return None
    rows = []
    for p in sorted(ASSETS.glob("*.nc")):
        with xr.open_dataset(p) as ds:
            if "elf_ref" in ds:
                rows.append((int(np.prod([ds.sizes[d] for d in ("a", "b", "c")])), p.name, p))
    rows = [r for r in sorted(rows) if r[0] <= 40**3]
    return [r[2] for r in rows[:2]] if len(rows) >= 2 else None


@pytest.fixture
def two_cases(tmp_path, rng):
    shipped = _small_shipped_cases()
    if shipped:
        return shipped
    return [
        _synthetic_case(tmp_path / "fluid_train.nc", rng, family="fluid", role="train", pressure=100.0),
        _synthetic_case(tmp_path / "cubic_0.nc", rng, family="cubic", role="test", pressure=100.0, n=6, L=3.0,
                        shape=(10, 10, 10)),
    ]


def test_settings_presets_validate():
    q, f = ReproduceSettings.quick(), ReproduceSettings.full()
    assert f.n_members >= 10 and q.n_members < f.n_members
    assert q.train.n_voxels < f.train.n_voxels
    assert f.cnn_patch.patch_size == 12 and min(f.cnn_r_cuts) == 0.25 and max(f.cnn_r_cuts) == 2.5
    assert json.loads(json.dumps(f.to_dict()))["descriptor"]["r_cut"] == 3.0
    with pytest.raises(ValueError, match="n_members"):
        ReproduceSettings(n_members=0)
    with pytest.raises(ValueError, match="cnn_channels"):
        ReproduceSettings(cnn_channels=(4, 8))


def test_stride_field_takes_exact_grid_points(rng):
    f = make_field(rng.random((12, 9, 10)), np.eye(3) * 4.0)
    g = runs.stride_field(f, 3)
    assert g.shape == (4, 3, 5)  # 10 is not divisible by 3: stride 2 along c
    np.testing.assert_array_equal(g.values, f.values[::3, ::3, ::2])
    assert runs.stride_field(f, 1) is f


def test_member_stats_mean_and_std():
    ref = np.linspace(0, 1, 50)
    pred = np.stack([ref + 0.01, ref - 0.03])
    st = runs.member_stats(pred, ref)
    assert st["mae"] == pytest.approx(0.02)
    assert st["mae_std"] == pytest.approx(np.std([0.01, 0.03], ddof=1))
    assert st["ensemble"]["mae"] == pytest.approx(0.01)
    assert st["n_members"] == 2 and st["n"] == 50


def test_split_cases_roles(rng):
    def case(name, family, role, p):
        return runs.Case(name=name, field=make_field(np.zeros((2, 2, 2)), np.eye(3)), family=family, role=role, pressure=p)

    cs = [case("t1", "fluid", "train", 76.0), case("x1", "fluid", "test", 76.0), case("x2", "fluid", "test", 115.1),
          case("c1", "cubic", "test", 100.0), case("h1", "hexagonal", "test", 100.0)]
    sp = runs.split_cases(cs)
    assert [c.name for c in sp["train"]] == ["t1"]
    assert [c.name for c in sp["test"]] == ["x1", "x2"]
    assert [c.name for c in sp["shown"]] == ["x1", "x2"]  # one per pressure, independent snapshot first
    assert [c.name for c in sp["cubic"]] == ["c1"] and [c.name for c in sp["hexagonal"]] == ["h1"]
    sp2 = runs.split_cases(cs[1:])  # no training role: first case, with a note
    assert [c.name for c in sp2["train"]] == ["x1"] and sp2["notes"]


def test_split_cases_keeps_large_cells_out_of_the_paper_protocol():
    def case(name, role, n_atoms):
        pos = np.random.default_rng(n_atoms).uniform(0, 10, (n_atoms, 3))
        field = make_field(np.zeros((2, 2, 2)), np.eye(3) * 10, pos, np.ones(n_atoms, int))
        return runs.Case(name=name, field=field, family="fluid", role=role, pressure=76.0)

    cs = [case("t64", "train", 64), case("x64", "test", 64), case("t512", "train", 512), case("x512", "test", 512)]
    sp = runs.split_cases(cs)
    assert [c.name for c in sp["train"]] == ["t64"] and [c.name for c in sp["test"]] == ["x64"]
    assert [c.name for c in sp["large_train"]] == ["t512"] and [c.name for c in sp["large_test"]] == ["x512"]
    assert [c.name for c in sp["shown"]] == ["x64"]


def test_write_block_replaces_only_its_block(tmp_path):
    md = tmp_path / "results.md"
    md.write_text("# Results\n\n## Other\nkeep me\n")
    report.write_block(md, "## A\nfirst")
    report.write_block(md, "## A\nsecond")
    text = md.read_text()
    assert "keep me" in text and "second" in text and "first" not in text
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    md.write_text(text + "\n## Later\nalso kept\n")
    report.write_block(md, "## A\nthird")
    assert "also kept" in md.read_text() and "third" in md.read_text()


def _finite_numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _finite_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _finite_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, float):
        yield path, obj
    elif obj is None and path.rsplit(".", 1)[-1] in ("mae", "rmse", "r2", "mae_std", "rmse_std", "r2_std"):
        yield path, float("nan")  # non-finite numbers are written as null


@pytest.mark.slow
def test_quick_cli_end_to_end(tmp_path, two_cases, capsys):
    from elfcore.cli import main

    out = tmp_path / "figures"
    md = tmp_path / "results.md"
    md.write_text("# Measured results\n\n## Someone else's section\nuntouched\n")
    rc = main(["reproduce", "--quick", "--cases", *map(str, two_cases), "--out", str(out),
               "--results", str(md), "--device", "cpu", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0, summary["errors"]
    assert summary["errors"] == {}
    for name in ("fig_s1_cnn.png", "fig_s2_convergence.png", "fig_s3_kcorrection.png", "reproduce.json"):
        assert (out / name).stat().st_size > 1000, name
    assert summary["baseline"]["table_s1"][0]["set"].startswith("training")
    numbers = dict(_finite_numbers(summary["baseline"]))
    numbers.update(_finite_numbers(summary["cnn"]))
    numbers.update(_finite_numbers(summary["sweeps"]))
    bad = {k: v for k, v in numbers.items() if not np.isfinite(v)}
    assert numbers and not bad, bad
    assert summary["baseline"]["table_s1"][0]["n_members"] == ReproduceSettings.quick().n_members
    assert len(summary["cnn"]["sweep"]) == len(ReproduceSettings.quick().cnn_r_cuts)
    text = md.read_text()
    assert "untouched" in text and report.BEGIN in text and "Table S1 analogue" in text
    assert "fig_s1_cnn.png" in text


def test_pool_split_alternates_snapshots_per_md():
    def case(name, role, p, step, target):
        return runs.Case(name=name, field=make_field(np.zeros((2, 2, 2)), np.eye(3)), family="fluid", role=role,
                         pressure=p, md_step=step, target_pressure=target)

    cs = [case("a0", "train", 70.1, 200, 76.0)]
    cs += [case(f"a{k}", "test", 70.0 + k, 200 + 100 * k, 76.0) for k in (1, 2, 3)]
    cs += [case("b0", "train", 111.0, 200, 115.1), case("b1", "test", 112.0, 300, 115.1),
           case("b2", "test", 109.0, 400, 115.1)]
    sp = runs.split_cases(cs)
    # snapshots of one MD have different pressures but share the target: one "shown" per MD
    assert [c.name for c in sp["shown"]] == ["a1", "b1"]
    ps = runs.pool_split(sp)
    assert sorted(c.name for c in ps["train"]) == ["a0", "a2", "b0", "b2"]
    assert sorted(c.name for c in ps["held_out"]) == ["a1", "a3", "b1"]
    assert runs.pool_split(runs.split_cases(cs[:2] + cs[4:])) is None  # one independent snapshot at 76 GPa


def test_pool_variant_scores_both_models_on_the_same_voxels(tmp_path, rng):
    paths = [_synthetic_case(tmp_path / "t0.nc", rng, family="fluid", role="train", pressure=100.0)]
    paths += [_synthetic_case(tmp_path / f"x{k}.nc", rng, family="fluid", role="test", pressure=100.0)
              for k in (1, 2)]
    cases = runs.load_cases(paths)
    for k, c in enumerate(cases):
        c.md_step = k
    split = runs.split_cases(cases)
    s = ReproduceSettings.quick()
    _, arrays = runs.run_baseline(split, s, device="cpu")
    res = runs.run_pool_variant(split, s, arrays, device="cpu")
    assert len(res["train_cases"]) == 2 and len(res["held_out"]) == 1
    base, pooled = res["rows"]
    assert base["n"] == pooled["n"] and base["n_train"] == 1 and pooled["n_train"] == 2
    assert pooled["n_members"] == s.pool_members
    assert all(np.isfinite(r[k]) for r in res["rows"] for k in ("mae", "rmse", "r2"))


def test_partial_outputs_are_written_and_labelled(tmp_path):
    from elfcore.reproduce import write_outputs
    import time

    summary = {"command": "elfcore reproduce", "mode": "full", "machine": "test", "settings":
               ReproduceSettings.quick().to_dict(), "n_cases": 0, "case_counts": {}, "notes": [], "figures": [],
               "errors": {}}
    md = tmp_path / "results.md"
    out = write_outputs(dict(summary), tmp_path, md, time.perf_counter(), finished=False)
    assert json.loads((tmp_path / "reproduce.json").read_text())["finished"] is False
    assert "stopped before all parts" in md.read_text() and out["results_md"] == str(md)
    write_outputs(dict(summary), tmp_path, md, time.perf_counter(), finished=True)
    assert "stopped before all parts" not in md.read_text()


def test_large_cells_rows_kspace_and_figure(tmp_path, rng, monkeypatch):
    from elfcore.reproduce import figures

    monkeypatch.setattr(runs, "LARGE_CELL_ATOMS", 20)
    paths = [_synthetic_case(tmp_path / "t0.nc", rng, family="fluid", role="train", pressure=100.0),
             _synthetic_case(tmp_path / "x0.nc", rng, family="fluid", role="test", pressure=100.0)]
    big = dict(family="fluid", n=24, L=5.0, shape=(16, 16, 16))
    paths += [_synthetic_case(tmp_path / "big_t.nc", rng, role="train", pressure=100.0, **big),
              _synthetic_case(tmp_path / "big_x1.nc", rng, role="test", pressure=100.0, **big),
              _synthetic_case(tmp_path / "big_x2.nc", rng, role="test", pressure=150.0, **big)]
    split = runs.split_cases(runs.load_cases(paths))
    assert [c.name for c in split["train"]] == ["t0"] and len(split["large_test"]) == 2
    s = ReproduceSettings.quick()
    _, arrays = runs.run_baseline(split, s, device="cpu")
    res, l_arrays = runs.run_large_cells(split, s, arrays, device="cpu")
    assert [c["name"] for c in res["cases"]] == ["big_x1", "big_x2"]
    assert res["variant_train"] == ["t0", "big_t"] and res["variant_members"] == s.pool_members
    for c in res["cases"]:
        assert c["baseline"]["n"] == c["variant"]["n"] and c["baseline"]["n_members"] == s.n_members
        k = c["kspace"]
        assert set(k["oracle"]) == set(s.large_shells) and set(k["sparse"]) == set(s.large_sparse_fractions)
        assert k["oracle"][max(s.large_shells)] >= k["r2_before"] - 1e-9  # a least-squares fit cannot lose
        assert 0 <= k["low_k_fraction"] <= 1
    # one pooled row per pressure, then all cells; the pooled R² differs from per-cell values
    assert [r["n_cases"] for r in res["rows"]] == [1, 1, 2]
    assert res["rows"][0]["baseline"]["r2"] == pytest.approx(res["cases"][0]["baseline"]["r2"])
    assert sorted(l_arrays) == ["big_x1", "big_x2"] and len(res["kcorrection"]) == 2
    fig = figures.figure_s3({"n_shells": s.k_shells, "cases": res["kcorrection"]}, l_arrays, tmp_path / "l.png")
    assert fig.stat().st_size > 1000
    summary = {"settings": s.to_dict(), "large": res}
    from elfcore.jsonsafe import to_jsonable

    lines = "\n".join(report._large_lines(to_jsonable(summary), "figures"))
    assert "| big_x1 |" in lines and "all large test cells (2)" in lines and "fig_s3_large.png" in lines
    text = " ".join(report._large_sentences(to_jsonable(res)))
    assert "2 independent large cells (24 atoms)" in text and "trained also on the large training cells" in text


def test_large_cells_part_needs_a_large_test_cell(rng, tmp_path):
    split = runs.split_cases(runs.load_cases(
        [_synthetic_case(tmp_path / "t0.nc", rng, family="fluid", role="train", pressure=100.0)]))
    with pytest.raises(ElfcoreError, match="no large test cell"):
        runs.run_large_cells(split, ReproduceSettings.quick(), {"model": None}, device="cpu")


def test_split_cases_keeps_the_paper_pressures():
    def case(name, role, target, family="fluid"):
        return runs.Case(name=name, field=make_field(np.zeros((2, 2, 2)), np.eye(3)), family=family, role=role,
                         pressure=target, target_pressure=target)

    cs = [case("a0", "train", 76.0), case("a1", "test", 76.0), case("m0", "train", 103.0),
          case("m1", "test", 103.0), case("b0", "train", 115.1), case("c1", "test", 150.0, family="cubic")]
    sp = runs.split_cases(cs)
    assert [c.name for c in sp["train"]] == ["a0", "b0"] and [c.name for c in sp["test"]] == ["a1"]
    assert [c.name for c in sp["cubic"]] == ["c1"]
    assert any("103 GPa left out" in n for n in sp["notes"])
    every = runs.split_cases(cs, None)
    assert [c.name for c in every["train"]] == ["a0", "m0", "b0"] and not every["notes"]
    # data without any of the paper's pressures: everything is kept
    other = runs.split_cases([case("m0", "train", 103.0), case("m1", "test", 103.0)])
    assert [c.name for c in other["test"]] == ["m1"] and not other["notes"]
