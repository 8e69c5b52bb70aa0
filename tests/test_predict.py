"""Tests of full-grid ELF prediction (elfcore.predict, ``elfcore predict``)."""
import json

import numpy as np
import pytest
import torch
from ase import Atoms

from elfcore.cli import main
from elfcore.descriptor import DescriptorSettings, compute_descriptor
from elfcore.errors import GridError, SettingsMismatchError, StructureError
from elfcore.grid import grid_points_frac, validate_field
from elfcore.models import Ensemble, save_model
from elfcore.predict import (
    Prediction,
    grid_shape_for_spacing,
    make_evaluator,
    predict_field,
)
from elfcore.reproduce.bench import random_hydrogen, timing_model

SETTINGS = DescriptorSettings(r_cut=3.0, n_radial=4, l_max=2, sigma=0.5)
CELL = np.array([[4.2, 0.0, 0.0], [0.8, 4.0, 0.0], [0.3, 0.5, 3.9]])


@pytest.fixture
def atoms(rng):
    return Atoms("H8", positions=rng.random((8, 3)) @ CELL, cell=CELL, pbc=True)


@pytest.fixture
def model(atoms):
    m = timing_model(SETTINGS, width=16, seed=3)
    x = compute_descriptor(atoms, grid_points_frac((4, 4, 4)) @ CELL, SETTINGS, device="cpu")
    m.set_normalization(x.mean(0), x.std(0))
    return m.eval()


def test_predict_field_matches_pointwise_model(atoms, model):
    shape = (6, 5, 7)
    field = predict_field(atoms, model, shape=shape, device="cpu", progress=False).elf
    validate_field(field)
    assert field.shape == shape and field.name == "elf"
    np.testing.assert_allclose(field.attrs["positions"], atoms.positions)
    pts = grid_points_frac(shape) @ CELL
    with torch.inference_mode():
        ref = model(compute_descriptor(atoms, pts, SETTINGS, device="cpu")).numpy().reshape(shape)
    np.testing.assert_allclose(field.values, ref, atol=2e-5)


def test_batch_size_does_not_change_result(atoms, model):
    a = predict_field(atoms, model, shape=(6, 5, 7), device="cpu", progress=False).elf
    b = predict_field(atoms, model, shape=(6, 5, 7), device="cpu", progress=False, batch_size=35).elf
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)


def test_bfloat16_inference_close(atoms, model):
    a = predict_field(atoms, model, shape=(5, 5, 5), device="cpu", progress=False).elf
    b = predict_field(atoms, model, shape=(5, 5, 5), device="cpu", progress=False, precision="bfloat16").elf
    assert np.abs(a.values - b.values).max() < 2e-2


def test_ensemble_gives_mean_and_std(atoms, model):
    other = timing_model(SETTINGS, width=16, seed=4)
    other.set_normalization(model.feature_shift, model.feature_scale)
    ens = Ensemble.from_members([model, other])
    mean, std = predict_field(atoms, ens, shape=(4, 4, 5), device="cpu", progress=False)
    assert mean.shape == std.shape == (4, 4, 5) and std.name == "elf_std"
    x = compute_descriptor(atoms, grid_points_frac((4, 4, 5)) @ CELL, SETTINGS, device="cpu")
    with torch.inference_mode():
        members = ens(x)
    np.testing.assert_allclose(mean.values.ravel(), members.mean(0).numpy(), atol=2e-5)
    np.testing.assert_allclose(std.values.ravel(), members.std(0, correction=0).numpy(), atol=2e-5)


def test_one_return_type_for_model_and_ensemble(atoms, model):
    single = predict_field(atoms, model, shape=(3, 3, 4), device="cpu", progress=False)
    ens = predict_field(atoms, Ensemble.from_members([model, model]), shape=(3, 3, 4), device="cpu", progress=False)
    assert isinstance(single, Prediction) and isinstance(ens, Prediction)
    assert single.std is None and single.elf.name == "elf"
    assert ens.std.name == "elf_std" and float(ens.std.max()) < 1e-6  # identical members
    np.testing.assert_allclose(ens.elf.values, single.elf.values, atol=1e-6)


def test_fast_evaluator_equals_model(model, rng):
    x = torch.as_tensor(rng.normal(size=(50, SETTINGS.n_features)), dtype=torch.float32) * model.feature_scale
    evaluate, n = make_evaluator(model)
    with torch.inference_mode():
        torch.testing.assert_close(evaluate(x)[0], model(x), atol=1e-5, rtol=1e-5)
    assert n == 1


def test_bad_input_refused(atoms, model):
    with pytest.raises(StructureError, match="no atoms"):
        predict_field(Atoms(cell=CELL, pbc=True), model, shape=(2, 2, 2), progress=False)
    with pytest.raises(GridError, match="memory budget"):
        predict_field(atoms, model, shape=(2000, 2000, 2000), progress=False)
    bare = timing_model(SETTINGS, width=8)
    bare.descriptor_settings = None
    with pytest.raises(SettingsMismatchError):
        predict_field(atoms, bare, shape=(2, 2, 2), progress=False)


def test_element_outside_the_model_refused_before_any_work(atoms, model, caplog):
    """A hydride with the hydrogen model: refused by element name, before the grid is even announced."""
    hydride = atoms.copy()
    hydride.numbers[0] = 57
    with caplog.at_level("INFO", logger="elfcore"), pytest.raises(StructureError, match=r"La \(Z=57\).*\['H'\]"):
        predict_field(hydride, model, shape=(4, 4, 4), progress=False)
    assert "predicting ELF" not in caplog.text


def test_spacing_rounds_to_fft_sizes():
    assert grid_shape_for_spacing(np.diag([11.05, 5.0, 1.0]), 0.0576) == (192, 90, 18)


def test_spacing_grid_bounds():
    cell = np.diag([0.3, 6.7, 30.0])
    assert grid_shape_for_spacing(cell, 0.1, min_points=8, max_points=96) == (8, 72, 96)
    assert grid_shape_for_spacing(cell, 0.1) == (3, 72, 300)
    with pytest.raises(GridError, match="min_points"):
        grid_shape_for_spacing(cell, 0.1, min_points=10, max_points=8)


def test_random_hydrogen_density_and_distance():
    a = random_hydrogen(40, seed=2)
    assert len(a) == 40
    assert abs(a.get_volume() / 40 - 2.7) < 1e-9
    d = a.get_all_distances(mic=True)[np.triu_indices(40, 1)]
    assert d.min() >= 0.8
    np.testing.assert_allclose(random_hydrogen(40, seed=2).positions, a.positions)


def test_cli_predict_writes_field_and_std(tmp_path, atoms, model, capsys):
    from ase.io import write

    from elfcore.io import read_field

    write(tmp_path / "POSCAR", atoms, format="vasp")
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    out = tmp_path / "elf.cube"
    rc = main(["predict", str(tmp_path / "POSCAR"), "--model", str(path), "--grid", "4,5,6", "--device", "cpu",
               "--out", str(out), "--json", "--no-progress"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["grid"] == [4, 5, 6] and info["files"] == [str(out)]
    field = read_field(out)
    assert field.shape == (4, 5, 6)
    direct = predict_field(atoms, model, shape=(4, 5, 6), device="cpu", progress=False).elf
    np.testing.assert_allclose(field.values, direct.values, atol=1e-4)
    ens = Ensemble.from_members([model, model])
    save_model(ens, tmp_path / "e.safetensors")
    rc = main(["predict", str(tmp_path / "POSCAR"), "--model", str(tmp_path / "e.safetensors"), "--grid", "3",
               "--device", "cpu", "--ensemble", "--out", str(tmp_path / "e.cube"), "--no-progress"])
    assert rc == 0 and (tmp_path / "e_std.cube").exists()
    assert main(["predict", str(tmp_path / "POSCAR"), "--model", str(path), "--grid", "3", "--ensemble",
                 "--out", str(tmp_path / "x.cube"), "--no-progress"]) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_prediction_matches_cpu(atoms, model):
    a = predict_field(atoms, model, shape=(6, 5, 7), device="cpu", progress=False).elf
    b = predict_field(atoms, model, shape=(6, 5, 7), device="cuda", progress=False).elf
    np.testing.assert_allclose(a.values, b.values, atol=1e-4)
