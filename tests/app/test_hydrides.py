"""The app on a metal hydride: the hydride model is chosen by the structure's elements (real engine, stand-in models)."""
from __future__ import annotations

import io

import numpy as np
import pytest


def _write_hydride_model(directory, atoms, species=("H", "S")):
    """An untrained zoo:hydrides stand-in (random weights, the several-species descriptor)."""
    import torch

    from elfcore import zoo
    from elfcore.descriptor import DescriptorSettings, compute_descriptor
    from elfcore.models import save_model
    from elfcore.models.mlp import MLP

    settings = DescriptorSettings(r_cut=2.0, n_radial=2, l_max=1, species=species)
    gen = torch.Generator().manual_seed(3)
    x = compute_descriptor(atoms, np.random.default_rng(0).random((128, 3)) @ atoms.cell[:], settings, device="cpu")
    model = MLP(settings.n_features, width=8, hidden_layers=1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    model.set_normalization(x.mean(0), x.std(0))
    model.descriptor_settings = settings
    save_model(model, zoo.hydride_model_path(directory=directory))


@pytest.fixture
def hydride_state(tmp_path, tiny_data_dir, monkeypatch):
    from app.pipeline import ElfcoreEngine, Pipeline
    from app.state import AppState
    from elfcore.reference.hydrides import prototype
    from tests.app.conftest import make_test_zoo

    h3s = prototype("h3s")
    make_test_zoo(tmp_path, h3s[[a.index for a in h3s if a.symbol == "H"]], pairs=((3.0, 2),), n_members=1)
    _write_hydride_model(tmp_path, h3s)
    monkeypatch.setenv("ELFCORE_ZOO_DIR", str(tmp_path))
    return AppState(pipeline=Pipeline(engine=ElfcoreEngine(device="cpu"), data_dir=tiny_data_dir)), h3s


def _poscar(atoms) -> bytes:
    from ase.io import write

    buf = io.StringIO()
    write(buf, atoms, format="vasp")
    return buf.getvalue().encode()


def test_hydride_upload_gets_the_hydride_model(hydride_state):
    state, h3s = hydride_state
    assert "hydrides" in state.param.training.objects
    assert state.training == "fluid"
    assert state.upload("POSCAR", _poscar(h3s)), state.message
    assert state.training == "hydrides"
    assert "hydrides model (chosen for H, S)" in state.message
    fs = state.fields()
    assert fs.error == "" and fs.prediction is not None
    assert np.isfinite(fs.prediction.values).all()
    # back to a pure-hydrogen case: the fluid zoo again
    state.case = next(k for k in state.param.case.objects.values() if k.startswith("bundled:"))
    assert state.training == "fluid"
    assert state.fields().error == ""


def test_an_element_no_model_knows_is_named(hydride_state):
    from elfcore.reference.hydrides import prototype

    state, _ = hydride_state
    assert state.upload("POSCAR", _poscar(prototype("yh6")))
    assert "Y" in state.message and "no model knows" in state.message
    assert state.training != "hydrides"
    assert "No prediction" in state.fields().error and "Y" in state.fields().error


def test_no_hydride_model_no_hydride_button(state):
    """With no zoo:hydrides file (the stand-in zoo), the training choice does not offer it."""
    assert "hydrides" not in state.param.training.objects
