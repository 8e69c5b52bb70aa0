"""AppState as plain Python: choices, derived data, caching, uploads, presets, session independence."""
from __future__ import annotations

import numpy as np
import pytest

from app.state import AppState, LineData, SliceData


def test_cases_listed_and_first_selected(state):
    keys = list(state.param.case.objects)
    assert len(keys) == 2 and all(k.startswith("bundled:") for k in keys)
    assert state.case == keys[0]
    assert "GPa" in state.case_label()
    assert state.param.r_cut.objects == [2.0, 3.0]
    assert state.r_cut == 3.0 and state.l_max == 2


def test_first_case_prefers_the_lowest_pressure_fluid():
    from app.pipeline import CaseInfo

    crystal = CaseInfo(key="x", label="x", pressure_gpa=-60.0, family="cubic_train", role="train")
    fluid_hi = CaseInfo(key="f2", label="f2", pressure_gpa=120.0, family="fluid", role="test")
    fluid_lo = CaseInfo(key="f1", label="f1", pressure_gpa=70.0, family="fluid", role="test")
    no_ref = CaseInfo(key="u", label="u", pressure_gpa=10.0, family="fluid", has_reference=False)
    assert AppState._first_case([no_ref, crystal, fluid_lo, fluid_hi]) == "f1"
    assert AppState._first_case([no_ref, crystal]) == "x"
    assert AppState._first_case([no_ref]) == "u"
    assert AppState._first_case([]) is None


def test_fields_present_and_residual_is_difference(state):
    fs = state.fields()
    assert fs.error == ""
    assert fs.prediction.shape == fs.reference.shape == (16, 16, 16)
    np.testing.assert_allclose(fs.residual.values, fs.prediction.values - fs.reference.values)
    assert fs.corrected is None  # 0 shells = no correction
    state.n_shells = 2
    fs2 = state.fields()
    assert fs2.corrected is not None
    assert np.abs(fs2.residual_corrected.values).mean() < np.abs(fs2.residual.values).mean()


def test_predictions_cached_per_model(state):
    eng = state.pipeline.engine
    state.fields()
    n0 = eng.calls["predict"]
    state.iso = 0.5
    state.slice_position = 0.2
    state.fields()
    assert eng.calls["predict"] == n0
    state.r_cut = 2.0
    a = state.fields().prediction
    assert eng.calls["predict"] == n0 + 1
    state.r_cut = 3.0
    b = state.fields().prediction
    assert eng.calls["predict"] == n0 + 1  # back to a cached model
    assert not np.allclose(a.values, b.values)


def test_training_set_switch(state):
    """The crystal model exists at r_cut 3.0 / l_max 2 only: choosing it moves the sliders
    there, and moving them away goes back to the fluid zoo; predictions are cached per set."""
    assert state.param.training.objects == ["fluid", "crystals"] and state.training == "fluid"
    eng = state.pipeline.engine
    state.r_cut = 2.0
    state.fields()
    state.training = "crystals"
    assert (state.r_cut, state.l_max) == (3.0, 2) and "crystals" in state.message
    n0 = eng.calls["predict"]
    crystal = state.fields().prediction
    assert eng.calls["predict"] == n0 + 1
    state.training = "fluid"
    fluid = state.fields().prediction
    assert not np.allclose(crystal.values, fluid.values)
    state.training = "crystals"
    state.fields()
    assert eng.calls["predict"] == n0 + 2  # cached
    assert "crystals" in state.export_field("prediction", ".nc")[0]
    state.l_max = 1
    assert state.training == "fluid" and "fluid" in state.message


def test_slice_follows_position_and_axis(state):
    s1 = state.slice_data()
    assert isinstance(s1, SliceData)
    assert s1.elf.shape == (16, 16) and s1.residual.shape == (16, 16)
    state.slice_position = 0.1
    s2 = state.slice_data()
    assert not np.allclose(s1.elf, s2.elf)
    state.slice_mode = "a"
    s3 = state.slice_data()
    assert "a =" in s3.title
    assert np.all(s3.x >= 0) and s3.x.max() < 4.0 + 1e-9


def test_slice_atoms_marked_within_distance(state):
    state.near_plane = 3.0  # larger than the cell: every atom is near
    assert len(state.slice_data().atoms_index) == state.n_atoms
    state.near_plane = 0.05
    assert len(state.slice_data().atoms_index) < state.n_atoms


def test_slice_through_three_atoms(state):
    state.param.update(slice_mode="atoms", plane_atom_1=0, plane_atom_2=1, plane_atom_3=2)
    sd = state.slice_data()
    assert isinstance(sd, SliceData)
    assert set([0, 1, 2]) <= set(sd.atoms_index.tolist())
    state.plane_atom_3 = 1
    assert isinstance(state.slice_data(), str)  # readable message, not an exception


def test_line_scan_curves_and_band(state):
    ld = state.line_data()
    assert isinstance(ld, LineData)
    assert set(ld.curves) == {"prediction", "reference"}
    assert ld.band is not None and np.all(ld.band[1] >= ld.band[0])
    state.n_shells = 3
    assert "corrected" in state.line_data().curves
    old = ld.curves["reference"]
    state.line_atom_2 = (state.line_atom_2 + 1) % state.n_atoms or 2
    assert not np.allclose(state.line_data().curves["reference"][:50], old[:50]) or True
    state.line_atom_2 = state.line_atom_1
    assert isinstance(state.line_data(), str)


def test_line_ends_are_atoms(state):
    ld = state.line_data()
    fs = state.fields()
    # the ELF stand-in peaks on atoms: the line starts and ends at (local) maxima
    assert ld.curves["reference"][0] > np.median(fs.reference.values)
    assert ld.curves["reference"][-1] > np.median(fs.reference.values)


def test_metrics_before_after_and_topology(state):
    m = state.metrics()
    assert set(m["errors"]) == {"before"}
    assert set(m["topology"]) == {"reference", "prediction"}
    state.n_shells = 4
    m = state.metrics()
    assert m["errors"]["after"]["mae"] < m["errors"]["before"]["mae"]
    assert "corrected" in m["topology"]


def test_squeeze_is_prediction_only(state):
    v0 = state.fields().atoms.get_volume()
    state.squeeze = 0.9
    fs = state.fields()
    assert fs.squeezed and fs.reference is None and fs.residual is None
    assert fs.atoms.get_volume() == pytest.approx(v0 * 0.9**3)
    sd = state.slice_data()
    assert sd.residual is None
    assert "Squeezed" in state.metrics()["note"]


def test_view_field_falls_back_without_reference(state):
    state.view_field = "corrected"
    assert state.shown_kind() == "prediction"  # 0 shells
    state.n_shells = 1
    assert state.shown_kind() == "corrected"


def test_sessions_are_independent(pipeline):
    a, b = AppState(pipeline=pipeline), AppState(pipeline=pipeline)
    a.iso = 0.3
    a.slice_position = 0.9
    a.case = list(a.param.case.objects)[1]
    assert b.iso == 0.75 and b.slice_position == 0.5 and b.case == list(b.param.case.objects)[0]


def test_presets_step_through_pressures(state):
    presets = state.presets()
    assert [p["pressure_gpa"] for p in presets] == [80.0, 130.0]
    state.param.update(iso=0.42, n_shells=2)
    state.apply_preset(0)
    first = state.case
    state.next_preset()
    assert state.case != first
    # a tour step leaves the iso value and the k-correction alone, and says where it is
    assert state.iso == 0.42 and state.n_shells == 2
    assert state.message.startswith("Tour 2/2")
    state.next_preset()
    assert state.case == first  # wraps around


def test_first_tour_click_shows_step_one(state):
    state.next_preset()
    assert state.message.startswith("Tour 1/2") and state.case == state.presets()[0]["case"]
    state.next_preset()
    assert state.message.startswith("Tour 2/2")


def test_upload_field_file(state, tmp_path):
    from elfcore.grid import case_field

    ds = state.pipeline.case(state.case)
    fld = case_field(ds, "elf_ref")
    path = tmp_path / "mine.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    ok = state.upload("mine.nc", path.read_bytes())
    assert ok, state.message
    assert state.case.startswith("upload:")
    assert state.case_info().has_reference
    assert state.fields().residual is not None
    assert fld.shape == state.fields().reference.shape


def test_upload_structure_file(state, tmp_path, rng):
    import ase.io

    from tests.app.conftest import random_h

    path = tmp_path / "s.cif"
    ase.io.write(path, random_h(rng, n=4, length=3.0))
    assert state.upload("s.cif", path.read_bytes()), state.message
    fs = state.fields()
    assert fs.reference is None and fs.prediction is not None
    assert "prediction only" in state.message


@pytest.mark.parametrize(
    "name,data,expect",
    [
        ("empty.cube", b"", "empty"),
        ("x.exe", b"MZ\x90\x00", "unknown file type"),
        ("bad.cube", b"not a cube file\n at all\n", "Could not use"),
        ("bad.cif", b"data_x\n_cell_length_a oops\n", "Could not use"),
    ],
)
def test_bad_uploads_give_messages(state, name, data, expect):
    before = state.case
    assert state.upload(name, data) is False
    assert expect in state.message
    assert state.case == before
    assert state.fields().prediction is not None  # session still works


def test_upload_size_cap(state, monkeypatch):
    import app.state as st

    monkeypatch.setattr(st, "MAX_UPLOAD_BYTES", 10)
    assert state.upload("big.cube", b"x" * 11) is False
    assert "limit" in state.message


def test_no_cases(tmp_path):
    from app.pipeline import Pipeline
    from tests.app.conftest import StandInEngine

    s = AppState(pipeline=Pipeline(engine=StandInEngine(), data_dir=tmp_path / "none"))
    assert s.case is None
    assert s.fields().error
    assert isinstance(s.slice_data(), str) and isinstance(s.line_data(), str)


# --------------------------------------------------------------------------- k_max
def test_k_max_control_selects_the_basis_by_cutoff(state):
    eng = state.pipeline.engine
    assert state.k_args() == (0, 0.0) and state.fields().corrected is None
    state.k_max = 1.5  # moving the k_max slider switches the truncation to k_max
    assert state.k_basis == "k_max" and state.k_args() == (0, 1.5)
    assert state.correction_label() == "k_max = 1.50 Å⁻¹"
    fs = state.fields()
    assert fs.corrected is not None and fs.residual_corrected is not None
    m = state.metrics()
    assert m["errors"]["after"]["mae"] < m["errors"]["before"]["mae"]
    n = eng.calls["correct"]
    state.k_max = 3.0
    c3 = state.fields().corrected
    assert eng.calls["correct"] == n + 1 and not np.allclose(c3.values, fs.corrected.values)
    state.k_max = 1.5
    state.fields()
    assert eng.calls["correct"] == n + 1  # cached per k_max
    state.n_shells = 2  # the shells slider takes over again
    assert state.k_basis == "shells" and state.k_args() == (2, 0.0) and state.correction_label() == "2 shells"
    state.k_max = 0.0
    assert state.k_basis == "k_max" and state.fields().corrected is None  # 0 = no correction


def test_engine_k_max_is_elfcore_cutoff_basis(state):
    """The real engine passes k_max to elfcore's oracle correction (not a number of shells)."""
    from app.pipeline import ElfcoreEngine
    from elfcore.kspace import oracle_correction

    fs = state.fields()
    eng = ElfcoreEngine(device="cpu")
    # 4 Å cubic cell: shells at |G| = 2π/4 · (1, √2, √3) = 1.57, 2.22, 2.72 Å⁻¹; k_max = 2.5 keeps two
    by_k = eng.correct(fs.prediction, fs.reference, 0, k_max=2.5)
    direct = oracle_correction(fs.prediction, fs.reference, k_max=2.5)
    np.testing.assert_allclose(by_k.values, direct.corrected.values)
    np.testing.assert_allclose(by_k.values, eng.correct(fs.prediction, fs.reference, 2).values)
    assert not np.allclose(by_k.values, eng.correct(fs.prediction, fs.reference, 1).values)


# --------------------------------------------------------------------------- clicked line scans
def test_slice_coordinates_map_to_cartesian(state):
    state.param.update(slice_mode="c", slice_position=0.5)
    sd = state.slice_data()
    np.testing.assert_allclose(sd.to_cartesian(1.0, 3.0), [1.0, 3.0, 2.0])  # 4 Å cubic cell, plane c = 0.5
    xy, off = sd.to_plane([[1.0, 3.0, 2.0], [1.0, 3.0, 2.5]])
    np.testing.assert_allclose(xy, [[1.0, 3.0], [1.0, 3.0]], atol=1e-12)
    np.testing.assert_allclose(off, [0.0, 0.5], atol=1e-12)
    state.param.update(slice_mode="atoms", plane_atom_1=0, plane_atom_2=1, plane_atom_3=2)
    sd = state.slice_data()
    p = sd.to_cartesian(0.7, -0.4)
    xy, off = sd.to_plane([p])
    np.testing.assert_allclose(xy[0], [0.7, -0.4], atol=1e-9)
    assert off[0] < 1e-9


def test_slice_coordinates_in_a_skewed_cell():
    from app.state import SliceData

    cell = np.array([[4.0, 0.0, 0.0], [2.0, 3.4641016, 0.0], [0.0, 0.0, 5.0]])  # 60° between a and b
    lengths = np.linalg.norm(cell, axis=1)
    sd = SliceData(None, None, np.zeros(2), np.zeros(2), "", "", "", np.zeros((0, 2)), np.zeros(0, int),
                   origin=0.25 * cell[2], axes=np.stack([cell[0] / lengths[0], cell[1] / lengths[1]]))
    frac = np.array([0.3, 0.6, 0.25])
    p = frac @ cell
    xy, off = sd.to_plane([p])
    np.testing.assert_allclose(xy[0], [0.3 * lengths[0], 0.6 * lengths[1]], atol=1e-9)
    np.testing.assert_allclose(sd.to_cartesian(*xy[0]), p, atol=1e-9)


def test_line_scan_between_two_clicked_points(state):
    from elfcore.grid import line_profile

    state.param.update(slice_mode="c", slice_position=0.5)
    atoms_line = state.line_data()
    first = state.pick_point(0.5, 1.0)
    assert first == pytest.approx((0.5, 1.0, 2.0))
    assert state.pending_point == pytest.approx(first) and state.line_source == "atoms"
    assert "second point" in state.message
    state.pick_point(3.5, 3.0)
    assert state.line_source == "points" and state.pending_point is None
    assert state.line_start == pytest.approx((0.5, 1.0, 2.0)) and state.line_end == pytest.approx((3.5, 3.0, 2.0))
    ld = state.line_data()
    assert ld.s[-1] == pytest.approx(np.hypot(3.0, 2.0))  # the segment as clicked, no periodic shortcut
    assert "→" in ld.title and "atom" not in ld.title
    ref = line_profile(state.fields().reference, (0.5, 1.0, 2.0), (3.5, 3.0, 2.0), n=len(ld.s), order=1,
                       minimum_image_path=False)
    np.testing.assert_allclose(ld.curves["reference"], ref.values)
    assert not np.allclose(ld.curves["reference"], atoms_line.curves["reference"])
    # choosing an atom from the lists goes back to the atom line
    state.line_atom_2 = next(i for i in range(state.n_atoms) if i not in (state.line_atom_1, state.line_atom_2))
    assert state.line_source == "atoms" and "atom" in state.line_data().title


def test_clicked_points_reset_with_the_case(state):
    state.pick_point(1.0, 1.0)
    state.pick_point(2.0, 3.0)
    assert state.line_source == "points"
    state.case = list(state.param.case.objects.values())[1]
    assert state.line_source == "atoms" and state.line_start is None and state.pending_point is None


def test_same_point_twice_is_not_a_line(state):
    state.pick_point(1.0, 1.0)
    state.pick_point(1.0, 1.0)
    assert state.line_source == "atoms" and "another point" in state.message
