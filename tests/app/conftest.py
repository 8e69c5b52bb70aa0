"""Fixtures of the app tests: a tiny synthetic case and a stand-in engine.

The synthetic case (a smooth sum of Gaussians around random H positions) and
:class:`StandInEngine` exercise the app's plumbing without the trained models;
they are test doubles only — nothing here is, or is shown as, DFT data. Tests
that use the real elfcore engine live beside these and skip when the shipped
models or data are missing.
"""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from app.pipeline import ElfcoreEngine, Pipeline
from elfcore.grid import field_from_atoms, grid_points_frac, make_case


def gaussian_elf(atoms, shape, width: float) -> np.ndarray:
    """A smooth periodic field in [0, 1): 1 − exp(−Σ exp(−r²/2w²)) over atoms (test stand-in for an ELF)."""
    cell = np.asarray(atoms.cell[:])
    pts = grid_points_frac(shape)
    total = np.zeros(len(pts))
    for s in atoms.get_scaled_positions():
        d = pts - s
        d = (d - np.round(d)) @ cell  # nearest image (the test cells are near-cubic)
        total += np.exp(-np.einsum("ij,ij->i", d, d) / (2 * width**2))
    return (1.0 - np.exp(-1.5 * total)).reshape(shape)


def random_h(rng, n: int = 8, length: float = 4.0):
    from ase import Atoms

    return Atoms("H" * n, positions=rng.random((n, 3)) * length, cell=np.eye(3) * length, pbc=True)


class StandInEngine(ElfcoreEngine):
    """Replaces the model zoo, k-correction, metrics and topology with simple closed forms (tests only)."""

    def __init__(self):
        super().__init__(device="cpu")
        self.calls = {"predict": 0, "correct": 0, "topology": 0}

    def read_case(self, path):
        return xr.load_dataset(path, engine="h5netcdf")

    def zoo_axes(self):
        return [2.0, 3.0], [1, 2]

    def has_crystal_model(self):
        return True

    def predict(self, atoms, r_cut, l_max, shape, training="fluid"):
        self.calls["predict"] += 1
        width = 0.30 + 0.05 * r_cut + 0.02 * l_max + (0.03 if training == "crystals" else 0.0)
        mean = field_from_atoms(gaussian_elf(atoms, shape, width), atoms, name="elf")
        std = field_from_atoms(np.full(shape, 0.02), atoms, name="elf_std")
        return mean, std

    def correction(self, pred, ref, n_shells, k_max=0.0):
        from elfcore.kspace import KCorrection

        self.calls["correct"] += 1
        strength = k_max if k_max > 0 else n_shells  # more basis functions: closer to the reference
        w = 1.0 - 1.0 / (1 + strength)
        out = pred + w * (ref - pred)
        out.attrs = dict(pred.attrs)
        before, after = self.metrics(pred, ref), self.metrics(out, ref)
        info = {f"{k}_before": v for k, v in before.items()} | {f"{k}_after": v for k, v in after.items()}
        return KCorrection(out, None, info)

    def metrics(self, pred, ref):
        p, r = np.asarray(pred.values).ravel(), np.asarray(ref.values).ravel()
        err = p - r
        return {
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "r2": float(1 - (err**2).sum() / ((r - r.mean()) ** 2).sum()),
        }

    def topology(self, fld):
        self.calls["topology"] += 1
        v = np.asarray(fld.values)
        return {"phi": float(np.median(v)), "molecularity": float(np.percentile(v, 90))}


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A data folder with two synthetic cases at two nominal pressures (grid 16³, 8 atoms)."""
    rng = np.random.default_rng(1234)
    d = tmp_path_factory.mktemp("data")
    for p in (80.0, 130.0):
        atoms = random_h(rng)
        ref = gaussian_elf(atoms, (16, 16, 16), 0.45)
        rho = ref * 0.3
        ds = make_case(atoms, {"elf_ref": ref, "rho_ref": rho}, attrs={"pressure_gpa": p, "family": "synthetic", "role": "test"})
        ds.to_netcdf(d / f"synthetic_{int(p)}.nc", engine="h5netcdf")
    return d


@pytest.fixture
def pipeline(tiny_data_dir):
    return Pipeline(engine=StandInEngine(), data_dir=tiny_data_dir)


@pytest.fixture
def state(pipeline):
    from app.state import AppState

    return AppState(pipeline=pipeline)


def make_test_zoo(directory, atoms, pairs=((2.0, 1), (2.0, 2), (3.0, 1), (3.0, 2)), *, n_members=3, seed=7):
    """Write small *untrained* ensembles with the zoo's descriptor settings (plumbing tests only).

    The input standardisation is set from descriptors of ``atoms`` so the
    random networks give a smoothly varying field instead of a saturated one.
    """
    import torch

    from elfcore import zoo
    from elfcore.descriptor import compute_descriptor
    from elfcore.models import save_model
    from elfcore.models.mlp import Ensemble

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    points = rng.random((256, 3)) @ np.asarray(atoms.cell[:])
    for r_cut, l_max in pairs:
        settings = zoo.zoo_settings(r_cut, l_max)
        x = compute_descriptor(atoms, points, settings, device="cpu")
        model = Ensemble(settings.n_features, n_members, width=16, hidden_layers=2)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        model.set_normalization(x.mean(0), x.std(0))
        model.descriptor_settings = settings
        save_model(model, zoo.zoo_path(r_cut, l_max, directory=directory))
    return directory
