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
    state.apply_preset(0)
    first = state.case
    state.next_preset()
    assert state.case != first and state.n_shells == 3
    state.next_preset()
    assert state.case == first  # wraps around


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
