"""The app's state on the shipped cases and zoo model (skipped until they are built)."""
from __future__ import annotations

import numpy as np
import pytest

from app.pipeline import DATA_DIR, Pipeline, bundled_cases


def _baseline_model_present() -> bool:
    from elfcore import zoo

    return zoo.zoo_path(*zoo.BASELINE).exists()


pytestmark = pytest.mark.skipif(
    not bundled_cases() or not _baseline_model_present(),
    reason="no shipped case in assets/data or no baseline zoo model in assets/models",
)


@pytest.fixture(scope="module")
def shipped_state():
    from app.state import AppState

    s = AppState(pipeline=Pipeline(data_dir=DATA_DIR))
    # the smallest shipped case keeps the test short; the zoo is trained on the fluid snapshots, so a fluid
    # case keeps the prediction in the model's domain (on the static cubic crystals it is far off)
    cases = list(s.param.case.objects)
    fluid = [k for k in cases if s.pipeline.case(k).attrs.get("family") == "fluid"]
    sizes = {k: int(np.prod([s.pipeline.case(k).sizes[d] for d in "abc"])) for k in fluid or cases}
    s.case = min(sizes, key=sizes.get)
    s.param.update(r_cut=3.0, l_max=2)
    return s


def test_prediction_on_the_reference_grid(shipped_state):
    fs = shipped_state.fields()
    assert fs.error == "", fs.error
    assert fs.prediction.shape == fs.reference.shape
    assert 0.0 <= float(fs.prediction.min()) and float(fs.prediction.max()) <= 1.0
    np.testing.assert_allclose(fs.prediction.attrs["cell"], fs.reference.attrs["cell"])


def test_metrics_and_k_correction_on_dft_data(shipped_state):
    shipped_state.n_shells = 3
    m = shipped_state.metrics()
    before, after = m["errors"]["before"], m["errors"]["after"]
    assert 0.0 < before["mae"] < 0.2
    assert np.isfinite([after["mae"], after["rmse"], after["r2"]]).all()
    assert after["mae"] != before["mae"]  # the corrected field is a different field
    fs = shipped_state.fields()
    assert fs.corrected is not None and fs.residual_corrected is not None
    for kind in ("reference", "prediction"):
        assert kind in m["topology"]
    sd = shipped_state.slice_data()
    assert np.isfinite(sd.residual).all() and np.abs(sd.residual).max() < 1.0


def test_crystal_model_on_a_shipped_crystal():
    """On an atomic test crystal the fluid + crystals model is far closer to DFT than the fluid zoo."""
    from elfcore.errors import ElfcoreError

    from app.state import AppState

    s = AppState(pipeline=Pipeline(data_dir=DATA_DIR))
    if "crystals" not in s.param.training.objects:
        pytest.skip("crystal model not shipped")
    key = next((k for k in s.param.case.objects if s.pipeline.case(k).attrs.get("name") == "cubic_sg207"), None)
    if key is None:
        pytest.skip("cubic_sg207 not shipped")
    s.case = key
    r2 = {}
    for training in ("fluid", "crystals"):
        s.training = training
        r2[training] = s.metrics()["errors"]["before"]["r2"]
    assert r2["crystals"] > 0.8 and r2["fluid"] < 0.5, r2
    with pytest.raises(ElfcoreError, match="r_cut 3.0"):
        s.pipeline.engine.predict(s.pipeline.structure(key), 2.0, 2, (8, 8, 8), training="crystals")
    with pytest.raises(ElfcoreError, match="unknown training"):
        s.pipeline.engine.predict(s.pipeline.structure(key), 3.0, 2, (8, 8, 8), training="md")


def _longrange_shipped() -> bool:
    from elfcore.longrange import shipped_path

    return shipped_path("zoo:rcut=3.0,lmax=2").is_file()


@pytest.mark.skipif(not _longrange_shipped(), reason="no shipped long-range correction")
def test_predicted_k_correction_needs_no_reference(shipped_state):
    """"predicted (no reference)": the shipped long-range correction, the same field with or without a reference."""
    from elfcore.grid import case_atoms
    from elfcore.longrange import predicted_correction, resolve_longrange

    s = shipped_state
    s.param.update(k_source="predicted", n_shells=0, r_cut=3.0, l_max=2, training="fluid")
    try:
        fs = s.fields()
        assert fs.corrected is not None and fs.residual_corrected is not None
        direct = predicted_correction(fs.prediction, resolve_longrange("auto", "zoo:rcut=3.0,lmax=2"))
        np.testing.assert_allclose(fs.corrected.values, direct.corrected.values, atol=1e-6)
        assert not np.allclose(fs.corrected.values, fs.prediction.values)
        assert s.correction_label() == "predicted, no reference"
        m = s.metrics()
        assert np.isfinite(m["errors"]["after"]["r2"]) and m["errors"]["after"] != m["errors"]["before"]
        assert "corrected" in m["topology"]
        name, _ = s.export_field("corrected", ".nc")
        assert name.endswith("_klongrange.nc"), name
        # the same structure uploaded as a POSCAR (no reference): corrected all the same, no residual
        import io as _io

        from ase.io import write as ase_write

        buf = _io.StringIO()
        ase_write(buf, case_atoms(s.pipeline.case(s.case)), format="vasp")
        assert s.upload("POSCAR", buf.getvalue().encode()), s.message
        fs2 = s.fields()
        assert fs2.reference is None and fs2.residual is None
        assert fs2.corrected is not None and not np.allclose(fs2.corrected.values, fs2.prediction.values)
        assert s.metrics()["errors"] == {}
    finally:
        s.param.update(k_source="reference")


@pytest.mark.skipif(not _longrange_shipped(), reason="no shipped long-range correction")
def test_predicted_k_correction_refused_where_none_is_shipped(shipped_state):
    s = shipped_state
    other = next((r for r in s.param.r_cut.objects if float(r) != 3.0), None)
    if other is None:
        pytest.skip("only one r_cut in the zoo")
    s.param.update(k_source="predicted", r_cut=other)
    try:
        fs = s.fields()
        assert fs.corrected is None
        assert "no long-range correction is shipped" in s.message and "r_cut 3.0 Å, l_max 2" in s.message
    finally:
        s.param.update(k_source="reference", r_cut=3.0)


def test_app_opens_on_the_most_accurate_entry_and_the_baseline_is_a_click_away():
    from app.state import AppState
    from elfcore.zoo import BASELINE, DEFAULT, zoo_path

    if not zoo_path(*DEFAULT).exists():
        pytest.skip("default zoo entry not shipped")
    s = AppState(pipeline=Pipeline(data_dir=DATA_DIR))
    assert (s.r_cut, s.l_max) == DEFAULT
    s.use_entry("baseline")
    assert (s.r_cut, s.l_max, s.training) == (*BASELINE, "fluid")
    s.training = "crystals"
    s.use_entry("default")
    assert (s.r_cut, s.l_max, s.training) == (*DEFAULT, "fluid")
