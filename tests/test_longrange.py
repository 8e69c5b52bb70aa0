"""Predicted long-range correction (elfcore.longrange): recovery, invariances, storage."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase import Atoms

from elfcore.errors import ElfcoreError, FormatError, SettingsError
from elfcore.grid import field_from_atoms, grid_points_frac
from elfcore.kspace import logit, reciprocal_shells, sigmoid
from elfcore.longrange import (
    LongRangeModel,
    LongRangeSettings,
    fit_longrange,
    predicted_correction,
)

L, N_GRID, K_MAX = 8.0, 20, 1.6


def _structure(seed: int, n: int = 24) -> Atoms:
    rng = np.random.default_rng(seed)
    return Atoms("H" * n, positions=rng.uniform(0, L, (n, 3)), cell=np.eye(3) * L, pbc=True)


def _pred_field(atoms: Atoms):
    """A smooth ELF-like field: Gaussians at the atoms through a sigmoid."""
    s = grid_points_frac((N_GRID,) * 3)
    z = np.full(len(s), -1.0)
    for p in atoms.get_scaled_positions():
        d = s - p
        d -= np.round(d)
        z += 3.0 * np.exp(-np.sum((d * L) ** 2, axis=1) / 0.5)
    return field_from_atoms(sigmoid(z).reshape((N_GRID,) * 3), atoms, name="elf")


def _true_delta(atoms: Atoms, kernel, offset: float) -> np.ndarray:
    """Σ_G f(|G|) ρ(G) e^{iG·r} + offset over 0 < |G| ≤ K_MAX, evaluated in real space."""
    m, k, _ = reciprocal_shells(np.eye(3) * L, k_max=K_MAX)
    s = grid_points_frac((N_GRID,) * 3)
    sj = atoms.get_scaled_positions()
    out = np.full(len(s), offset)
    for mi, ki in zip(m, k):
        # one ±G pair: f ρ(G) e^{iGr} + c.c. = (2 f / V) Σ_j cos(G·(r − r_j))
        out += 2.0 * kernel(ki) / L**3 * np.cos(2 * np.pi * (s @ mi)[:, None] - 2 * np.pi * (sj @ mi)[None, :]).sum(1)
    return out.reshape((N_GRID,) * 3)


def _pair(seed: int, kernel, offset=0.05):
    atoms = _structure(seed)
    pred = _pred_field(atoms)
    ref = pred.copy(data=sigmoid(logit(pred.values) + _true_delta(atoms, kernel, offset)))
    return pred, ref


SETTINGS = LongRangeSettings(k_max=K_MAX, channels=("atoms",), n_radial=3, ridge=0.0)


def _kernel_in_basis(k):
    """A kernel the radial basis represents exactly: f = 40 B₀ − 25 B₂."""
    c, w = SETTINGS.centres, SETTINGS.width
    return 40.0 * math.exp(-0.5 * ((k - c[0]) / w) ** 2) - 25.0 * math.exp(-0.5 * ((k - c[2]) / w) ** 2)


def test_fit_recovers_known_long_wavelength_perturbation():
    train = [_pair(s, _kernel_in_basis) for s in range(4)]
    model = fit_longrange(train, SETTINGS)
    np.testing.assert_allclose(model.kernel[0], [40.0, 0.0, -25.0], atol=1e-6)
    pred, ref = _pair(99, _kernel_in_basis)
    corr = predicted_correction(pred, model, ref=ref)
    assert corr.info["mode"] == "predicted"
    assert corr.info["coefficient_error"] < 1e-10
    assert corr.info["r2_after"] > 0.999999
    assert corr.info["r2_before"] < 0.99
    assert abs(corr.info["r2_after"] - corr.info["r2_oracle"]) < 1e-9


def test_reference_is_not_used_by_the_correction():
    model = fit_longrange([_pair(s, _kernel_in_basis) for s in range(3)], SETTINGS)
    pred, ref = _pair(7, _kernel_in_basis)
    a = predicted_correction(pred, model).corrected.values
    b = predicted_correction(pred, model, ref=ref).corrected.values
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("channels", [("atoms",), ("atoms", "bonds", "pred")])
def test_correction_is_translation_and_permutation_invariant(channels):
    settings = LongRangeSettings(k_max=K_MAX, channels=channels, n_radial=3, ridge=1e-3)
    model = fit_longrange([_pair(s, _kernel_in_basis) for s in range(3)], settings)
    atoms = _structure(11)
    pred = _pred_field(atoms)
    base = predicted_correction(pred, model).corrected.values
    # translate by whole grid steps: the corrected field moves with the structure
    shift = np.array([3, 5, 7])
    moved = atoms.copy()
    moved.positions += shift * L / N_GRID
    pred_moved = field_from_atoms(np.roll(pred.values, shift, axis=(0, 1, 2)), moved, name="elf")
    np.testing.assert_allclose(predicted_correction(pred_moved, model).corrected.values,
                               np.roll(base, shift, axis=(0, 1, 2)), atol=1e-9)
    perm = atoms[np.random.default_rng(0).permutation(len(atoms))]
    pred_perm = field_from_atoms(pred.values, perm, name="elf")
    np.testing.assert_allclose(predicted_correction(pred_perm, model).corrected.values, base, atol=1e-12)


def test_model_round_trips_through_json(tmp_path):
    model = fit_longrange([_pair(s, _kernel_in_basis) for s in range(3)], SETTINGS,
                          meta={"local_model": "synthetic"})
    path = model.save(tmp_path / "lr.json")
    back = LongRangeModel.load(path)
    assert back.settings == model.settings and back.meta["local_model"] == "synthetic"
    np.testing.assert_array_equal(back.kernel, model.kernel)
    pred, _ = _pair(5, _kernel_in_basis)
    np.testing.assert_array_equal(back.coefficients(pred), model.coefficients(pred))
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("text", ["{", "[]", '{"format": "other"}',
                                  '{"format": "elfcore-longrange", "format_version": 1, "settings": {}, '
                                  '"kernel": [[1]], "mean_weights": [0, 0, 0], "mean_intercept": 0}'])
def test_bad_model_file_is_a_format_error(tmp_path, text):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(FormatError):
        LongRangeModel.load(p)


@pytest.mark.parametrize("kwargs", [dict(k_max=0), dict(channels=("x",)), dict(channels=()),
                                    dict(n_radial=0), dict(bond_cutoff=5.0), dict(ridge=-1.0),
                                    dict(eps=0.7)])
def test_bad_settings_raise_settings_error(kwargs):
    with pytest.raises(SettingsError):
        LongRangeSettings(**kwargs)


def test_settings_round_trip():
    s = LongRangeSettings(channels=("bonds", "pred"), n_radial=4)
    assert LongRangeSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(SettingsError):
        LongRangeSettings.from_dict({"bogus": 1})


# ----------------------------------------------------------------------------- command line
def _case_file(path, seed: int):
    from elfcore.grid import make_case
    from elfcore.io import write_case

    pred, ref = _pair(seed, _kernel_in_basis)
    atoms = _structure(seed)
    write_case(make_case(atoms, {"elf_ref": ref.values, "elf_pred": pred.values},
                         attrs={"family": "fluid", "role": "test"}), path)
    return path


def test_cli_kcorrect_longrange_scores_without_using_the_reference(tmp_path, capsys):
    from elfcore.cli import main

    model = fit_longrange([_pair(s, _kernel_in_basis) for s in range(4)], SETTINGS)
    lr_file = model.save(tmp_path / "lr.json")
    case = _case_file(tmp_path / "case.nc", 42)
    assert main(["kcorrect", str(case), str(case), "--longrange", str(lr_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "predicted" and info["r2_after"] > 0.99999 > info["r2_before"]
    assert main(["kcorrect", str(case), str(case), "--longrange", str(lr_file), "--sample", "0.1"]) == 1
    assert "--longrange" in capsys.readouterr().err
    assert main(["kcorrect", str(case), str(case), "--longrange", str(tmp_path / "missing.json")]) == 1
    assert "not found" in capsys.readouterr().err


def test_cli_predict_longrange_writes_the_corrected_field(tmp_path, capsys):
    from elfcore.cli import main
    from elfcore.io import read_field

    model = fit_longrange([_pair(s, _kernel_in_basis) for s in range(3)], SETTINGS, meta={"local_model": "other"})
    lr_file = model.save(tmp_path / "lr.json")
    _structure(5).write(tmp_path / "POSCAR", format="vasp")
    base = ["predict", str(tmp_path / "POSCAR"), "--grid", "12", "--device", "cpu", "--no-progress", "--json"]
    assert main(base + ["--out", str(tmp_path / "plain.nc")]) == 0
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "corr.nc"), "--longrange", str(lr_file)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kcorrection"]["mode"] == "predicted"
    plain, corr = read_field(tmp_path / "plain.nc"), read_field(tmp_path / "corr.nc")
    assert plain.shape == corr.shape == (12, 12, 12)
    assert 0 < np.max(np.abs(corr.values - plain.values)) < 1
    assert main(base + ["--out", str(tmp_path / "x.nc"), "--longrange", "--model", "zoo:rcut=2.0,lmax=0"]) == 1
    assert "no long-range correction is shipped" in capsys.readouterr().err


def test_cli_longrange_fits_writes_and_scores(tmp_path, capsys):
    from elfcore.cli import main

    cases = [str(_case_file(tmp_path / f"c{s}.nc", s)) for s in range(3)]
    out = tmp_path / "lr.json"
    assert main(["longrange", *cases[:2], "--eval", cases[2], "--out", str(out), "--kmax", "1.6",
                 "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert LongRangeModel.load(out).meta["training_cells"] == ["c0", "c1"]
    (row,) = result["eval"]
    # L = 8 Å: shells at 0.79, 1.11, 1.36, 1.57 Å⁻¹ hold 3 + 6 + 4 + 3 ±G pairs below 1.6 Å⁻¹
    assert row["case"] == "c2" and row["n_basis"] == 1 + 2 * (3 + 6 + 4 + 3)
    assert main(["longrange", cases[0], "--out", str(tmp_path / "no" / "lr.json")]) == 1
    assert main(["longrange", cases[0], "--out", str(out), "--channels", "atoms,nope"]) == 1
    assert "channels" in capsys.readouterr().err


def test_shipped_longrange_model_matches_its_zoo_entry():
    from elfcore.longrange import resolve_longrange, shipped_path

    path = shipped_path("zoo:rcut=3.0,lmax=2")
    if not path.is_file():
        pytest.skip("no shipped long-range model")
    model = resolve_longrange("auto", "zoo:rcut=3.0,lmax=2")
    assert model.meta["local_model"] == "zoo:rcut=3.0,lmax=2"
    assert all(not name.startswith("fluid512") or "t0100" in name for name in model.meta["training_cells"])


def test_auto_longrange_refusal_lists_the_shipped_entries(tmp_path, monkeypatch):
    from elfcore.longrange import resolve_longrange, shipped_entries

    monkeypatch.setenv("ELFCORE_ZOO_DIR", str(tmp_path))
    assert shipped_entries() == []
    with pytest.raises(ElfcoreError, match="no long-range correction is shipped for zoo:rcut=2.0,lmax=0; fit"):
        resolve_longrange("auto", "zoo:rcut=2.0,lmax=0")
    for name in ("longrange_rcut3.0_lmax2.json", "longrange_rcut2.5_lmax3.json", "longrange_notes.json"):
        (tmp_path / name).write_text("{}")
    assert shipped_entries() == [(2.5, 3), (3.0, 2)]
    with pytest.raises(ElfcoreError, match=r"shipped for r_cut 2\.5 Å, l_max 3, r_cut 3\.0 Å, l_max 2"):
        resolve_longrange("auto", "zoo:rcut=2.0,lmax=0")
