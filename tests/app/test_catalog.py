"""Case list, guided tour, model choice and default line scan from case metadata (plain Python)."""
from __future__ import annotations

import numpy as np
import pytest

from app.catalog import (
    PAPER_PRESSURES_GPA,
    case_label,
    default_line_atoms,
    domain_warning,
    guided_tour,
    is_training,
    preferred_training,
    sort_cases,
)
from app.pipeline import DATA_DIR, CaseInfo, Pipeline, bundled_cases


def info(name, family, role, p, target=None, ref=True):
    return CaseInfo(key=f"bundled:{name}.nc", label=name, name=name, family=family, role=role, pressure_gpa=p,
                    target_pressure_gpa=target, has_reference=ref)


CASES = [
    info("cubic_sg207", "cubic", "test", -1.9),
    info("cubic_train_sg207", "cubic_train", "train", 235.4),
    info("cubic_h2_sg207", "cubic_molecular", "test", 77.0),
    info("cubic_sg218", "cubic", "test", 163.0),
    info("fluid_p138_t0250", "fluid", "test", 141.4, 138.5),
    info("fluid_p138_t0300", "fluid", "test", 139.0, 138.5),
    info("fluid_p076_t0200", "fluid", "train", 70.0, 76.0),
    info("fluid_p076_t0450", "fluid", "test", 67.9, 76.0),
    info("fluid_p103_t0300", "fluid", "test", 103.6, 103.0),
    info("fluid_p115_t0250", "fluid", "test", 115.4, 115.1),
    info("fluid_p115_t0300", "fluid", "test", 107.8, 115.1),
    info("hexagonal_sg176", "hexagonal", "test", 94.9),
]


def test_label_has_name_measured_and_target_pressure():
    by = {c.name: c for c in CASES}
    assert case_label(by["fluid_p076_t0450"]) == "fluid_p076_t0450 — 67.9 GPa (target 76)"
    assert case_label(by["cubic_sg207"]) == "cubic_sg207 — −1.9 GPa"
    assert case_label(by["cubic_train_sg207"]).endswith("[training case]")
    assert is_training(by["fluid_p076_t0200"]) and not is_training(by["fluid_p076_t0450"])


def test_case_list_fluid_by_pressure_then_crystals_then_training():
    names = [c.name for c in sort_cases(CASES)]
    assert names[:6] == ["fluid_p076_t0450", "fluid_p103_t0300", "fluid_p115_t0300", "fluid_p115_t0250",
                         "fluid_p138_t0300", "fluid_p138_t0250"]
    assert names[6:10] == ["cubic_sg207", "cubic_sg218", "hexagonal_sg176", "cubic_h2_sg207"]
    assert names[10:] == ["fluid_p076_t0200", "cubic_train_sg207"]


def test_tour_fluid_at_paper_pressures_then_crystals_with_crystal_model():
    steps = guided_tour(CASES)
    names = [s.case.split(":")[1][:-3] for s in steps]
    # one test snapshot per paper pressure (measured pressure closest to the target), increasing
    assert names == ["fluid_p076_t0450", "fluid_p115_t0250", "fluid_p138_t0300",
                     "cubic_sg207", "cubic_sg218", "hexagonal_sg176"]
    assert [s.training for s in steps] == ["fluid"] * 3 + ["crystals"] * 3
    assert all(s.text for s in steps)
    assert not any("train" in n for n in names)
    # without the crystal model the crystals are still shown, with the fluid model
    assert {s.training for s in guided_tour(CASES, crystal_model=False)} == {"fluid"}


def test_tour_prefers_a_small_cell_to_a_closer_large_one():
    from dataclasses import replace

    large = replace(info("fluid512_p076_t0150", "fluid", "test", 75.9, 76.0), n_atoms=512)
    steps = guided_tour([*CASES, large])
    assert steps[0].case == "bundled:fluid_p076_t0450.nc"  # 67.9 GPa, 64 atoms, beats 75.9 GPa with 512 atoms
    only_large = [c for c in CASES if not c.name.startswith("fluid_p076")] + [large]
    assert guided_tour(only_large)[0].case == large.key  # the large cell when nothing smaller is there


def test_tour_fallback_one_case_per_pressure_without_training_cases():
    cases = [info("a", "synthetic", "test", 130.0), info("b", "synthetic", "test", 80.0),
             info("c", "synthetic", "train", 90.0), info("d", "synthetic", "test", 60.0, ref=False)]
    assert [s.pressure_gpa for s in guided_tour(cases)] == [80.0, 130.0]
    assert guided_tour([]) == []


def test_model_choice_and_domain_warning():
    by = {c.name: c for c in CASES}
    assert preferred_training(by["cubic_sg218"]) == "crystals"
    assert preferred_training(by["cubic_h2_sg207"]) == "fluid"
    assert preferred_training(by["fluid_p076_t0450"]) == "fluid"
    w = domain_warning(by["cubic_sg218"], "fluid")
    assert "cubic_sg218" in w and "crystals" in w
    assert domain_warning(by["cubic_sg218"], "crystals") == ""
    assert domain_warning(by["fluid_p076_t0450"], "fluid") == ""


def test_default_line_is_not_the_h2_bond():
    # two H2 molecules: 0-1 bonded (0.74 Å), 2-3 bonded; atom 0's second-nearest is in the other molecule
    pos = np.array([[0, 0, 0], [0.74, 0, 0], [0, 1.6, 0], [0.74, 1.9, 0.3]], float)
    i, j = default_line_atoms(pos, np.eye(3) * 6.0)
    assert (i, j) == (0, 2)
    assert default_line_atoms(pos[:2], np.eye(3) * 6.0) == (0, 1)


@pytest.mark.skipif(not bundled_cases(), reason="no shipped cases in assets/data")
def test_tour_on_the_shipped_cases():
    infos = Pipeline(data_dir=DATA_DIR).scan()
    steps = guided_tour(infos)
    by_key = {i.key: i for i in infos}
    fluid = [by_key[s.case] for s in steps if s.training == "fluid"]
    assert len(steps) < 10
    assert [i.target_pressure_gpa for i in fluid] == list(PAPER_PRESSURES_GPA)
    assert all(i.role == "test" and "_train" not in i.name for i in map(by_key.get, (s.case for s in steps)))
    crystals = [by_key[s.case] for s in steps if s.training == "crystals"]
    assert crystals and all(i.family in ("cubic", "hexagonal") for i in crystals)
    for i in infos:
        assert i.name in i.label and (i.pressure_gpa is None or "GPa" in i.label)


def test_state_warns_on_a_crystal_with_the_fluid_model(tmp_path):
    from app.state import AppState
    from elfcore.grid import make_case

    from .conftest import StandInEngine, gaussian_elf, random_h

    atoms = random_h(np.random.default_rng(3), n=4)
    ds = make_case(atoms, {"elf_ref": gaussian_elf(atoms, (8, 8, 8), 0.45)},
                   attrs={"name": "cubic_sg999", "family": "cubic", "role": "test", "pressure_gpa": 50.0})
    ds.to_netcdf(tmp_path / "cubic_sg999.nc", engine="h5netcdf")
    s = AppState(pipeline=Pipeline(engine=StandInEngine(), data_dir=tmp_path))
    assert s.case_label() == "cubic_sg999 — 50.0 GPa"
    s.training = "fluid"
    assert "cubic_sg999" in s.domain_warning() and "crystals" in s.domain_warning()
    s.training = "crystals"
    assert s.domain_warning() == ""
    # the tour shows it with the crystal model and says so
    s.training = "fluid"
    s.apply_preset(0)
    assert s.training == "crystals" and "crystals" in s.message and s.domain_warning() == ""


def test_slice_and_line_labels_follow_what_is_shown(state):
    import app.main  # noqa: F401  (loads the plotting extensions as the served page does)
    from bokeh.models import ColorBar

    from app.views.linescan import LineScanView
    from app.views.slice import SliceView

    state.param.update(slice_mode="a", n_shells=2, view_field="corrected")
    sv, lv = SliceView(state), LineScanView(state)
    res, elf = sv.figures["residual"], sv.figures["elf"]
    assert res.xaxis[0].axis_label.startswith("along b") and res.yaxis[0].axis_label.startswith("along c")
    assert [c.title for c in res.select(type=ColorBar)] == ["ELF_corr − ELF_ref"]
    assert [c.title for c in elf.select(type=ColorBar)] == ["ELF (corrected)"]
    state.view_field = "reference"
    assert [c.title for c in elf.select(type=ColorBar)] == ["ELF (reference)"]
    assert [c.title for c in res.select(type=ColorBar)] == ["ELF_pred − ELF_ref"]

    def shown():
        return {item.label["value"] for leg in lv.figure.legend for item in leg.items if item.visible}

    assert shown() == {"reference", "prediction", "corrected", "ensemble ±1σ"}
    state.n_shells = 0
    assert shown() == {"reference", "prediction", "ensemble ±1σ"}


def test_correction_warning_reads_the_engines_numbers():
    from app.catalog import correction_warning

    worse = {"mae_before": 0.036, "mae_after": 0.040, "rmse_before": 0.05, "rmse_after": 0.049,
             "r2_before": 0.90, "r2_after": 0.89}
    text = correction_warning(worse, "2 shells")
    assert text.startswith("The k-correction (2 shells) makes this case worse")
    assert "MAE 0.0360 → 0.0400" in text and "R² 0.9000 → 0.8900" in text and "RMSE" not in text
    better = {"mae_before": 0.04, "mae_after": 0.03, "rmse_before": 0.05, "rmse_after": 0.04,
              "r2_before": 0.8, "r2_after": 0.9}
    assert correction_warning(better) == ""
    assert correction_warning({}) == ""
    # a change below the 4th decimal is shown with the digits that tell the two apart
    tiny = correction_warning({"mae_before": 0.016812, "mae_after": 0.016834, "r2_before": 0.99481,
                               "r2_after": 0.994808})
    assert "MAE 0.01681 → 0.01683" in tiny and "R² 0.994810 → 0.994808" in tiny
