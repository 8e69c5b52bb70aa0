"""Tests of the grid-point SOAP descriptor (direct and fft paths)."""
import math

import numpy as np
import pytest
import torch
from ase import Atoms

from elfcore import descriptor
from elfcore.descriptor import (
    DescriptorSettings,
    compute_descriptor,
    compute_grid_descriptor,
    default_r_include,
    dscribe_r_include,
    feature_labels,
    iter_grid_descriptor,
    radial_basis,
)
from elfcore.errors import ElfcoreError, StructureError
from elfcore.grid import grid_points_frac
from tests.descriptor_helpers import random_rotation as _rotation
from tests.descriptor_helpers import relerr as _relerr

SKEW = np.array([[4.0, 0.3, 0.1], [1.2, 3.8, -0.4], [0.5, 0.9, 4.3]])  # shorter than 2·r_cut
SMALL = DescriptorSettings(r_cut=3.0, n_radial=4, l_max=3, sigma=0.5)


def _atoms(rng, n=10, cell=SKEW):
    return Atoms(f"H{n}", positions=rng.random((n, 3)) @ cell, cell=cell, pbc=True)


# --------------------------------------------------------------------------- settings
def test_settings_validation_and_roundtrip():
    s = DescriptorSettings()
    assert s.n_features == 10 * 11 // 2 * 3
    assert DescriptorSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ElfcoreError, match="l_max=-1; must be ≥ 0"):
        DescriptorSettings(l_max=-1)
    with pytest.raises(ElfcoreError, match="n_radial"):
        DescriptorSettings(n_radial=0)
    with pytest.raises(ElfcoreError, match="sigma"):
        DescriptorSettings(sigma=-0.1)
    with pytest.raises(ElfcoreError, match="unknown"):
        DescriptorSettings.from_dict({"r_cut": 3.0, "rcut": 3.0})
    assert len(feature_labels(s)) == s.n_features


def test_radial_basis_is_orthonormal():
    r = np.linspace(0, 12, 20001)
    for l in range(3):
        g = radial_basis(DescriptorSettings(), r, l)
        gram = (g[:, None, :] * g[None, :, :] * r**2).sum(-1) * (r[1] - r[0])
        np.testing.assert_allclose(gram, np.eye(10), atol=2e-5)


# --------------------------------------------------------------------------- DScribe
@pytest.mark.reference
@pytest.mark.parametrize(
    "settings",
    [DescriptorSettings(), DescriptorSettings(r_cut=2.5, n_radial=6, l_max=4, sigma=0.4),
     DescriptorSettings(r_cut=4.0, n_radial=8, l_max=3, sigma=0.7)],
)
def test_matches_dscribe(rng, settings):
    dscribe = pytest.importorskip("dscribe.descriptors")
    atoms = _atoms(rng, 12)
    points = rng.random((25, 3)) @ SKEW
    soap = dscribe.SOAP(species=["H"], r_cut=settings.r_cut, n_max=settings.n_radial, l_max=settings.l_max,
                        sigma=settings.sigma, rbf="gto", periodic=True)
    ref = soap.create(atoms, centers=points)
    mine = compute_descriptor(atoms, points, settings, device="cpu", dtype=torch.float64,
                              r_include=dscribe_r_include(settings))
    assert _relerr(mine.numpy(), ref) <= 1e-5


# --------------------------------------------------------------------------- fft = direct
@pytest.mark.parametrize("shape", [(9, 8, 10), (3, 2, 1), (1, 1, 1)])
def test_fft_path_matches_direct(rng, shape):
    atoms = _atoms(rng, 10)
    idx = rng.choice(int(np.prod(shape)), size=min(40, int(np.prod(shape))), replace=False)
    pts = grid_points_frac(shape)[idx] @ SKEW
    direct = compute_descriptor(atoms, pts, SMALL, device="cpu", dtype=torch.float64)
    fft = compute_grid_descriptor(atoms, shape, SMALL, device="cpu", dtype=torch.float64)
    assert fft.shape == (int(np.prod(shape)), SMALL.n_features)
    assert _relerr(fft[idx].numpy(), direct.numpy()) <= 1e-5


def test_fft_baseline_settings_match_direct(rng):
    s = DescriptorSettings()
    atoms = _atoms(rng, 16, np.diag([5.0, 5.5, 4.5]))
    shape = (10, 11, 9)
    idx = rng.choice(int(np.prod(shape)), size=30, replace=False)
    direct = compute_descriptor(atoms, grid_points_frac(shape)[idx] @ atoms.cell[:], s, device="cpu",
                                dtype=torch.float64)
    fft = compute_grid_descriptor(atoms, shape, s, device="cpu", dtype=torch.float32)
    assert _relerr(fft[idx].numpy(), direct.numpy()) <= 1e-5


# every inverse transform as an FFT or as a dense product; (4, 3, 5) and (9, 8, 10) are coarser than
# the band limit along every axis (frequencies folded), (24, 6, 30) only along b
@pytest.mark.parametrize("min_freqs", [(0, 0, 0), (10**9,) * 3, (0, 10**9, 0), (10**9, 0, 10**9)])
@pytest.mark.parametrize("shape", [(4, 3, 5), (9, 8, 10), (24, 6, 30)])
def test_fft_and_dense_transforms_match_direct(rng, monkeypatch, min_freqs, shape):
    monkeypatch.setattr(descriptor, "_FFT_MIN_FREQS", min_freqs)
    atoms = _atoms(rng, 7)
    cell, positions = descriptor._structure(atoms)
    plan = descriptor._FFTPlan(cell, positions, shape, SMALL, torch.device("cpu"), torch.float64, 1e-7)
    assert plan.transforms == tuple("fft" if m == 0 else "dense" for m in min_freqs)
    idx = rng.choice(int(np.prod(shape)), size=min(40, int(np.prod(shape))), replace=False)
    direct = compute_descriptor(atoms, grid_points_frac(shape)[idx] @ SKEW, SMALL, device="cpu",
                                dtype=torch.float64)
    fft = compute_grid_descriptor(atoms, shape, SMALL, device="cpu", dtype=torch.float64, slab=5)
    assert _relerr(fft[idx].numpy(), direct.numpy()) <= 1e-5


def test_transform_choice_follows_frequency_count(rng):
    atoms = _atoms(rng, 3, np.eye(3) * 40.0)
    cell, positions = descriptor._structure(atoms)
    s = DescriptorSettings(n_radial=2, l_max=0, sigma=0.35)  # one channel; 2·82+1 / 83 frequencies
    big = descriptor._FFTPlan(cell, positions, (180, 180, 180), s, torch.device("cpu"), torch.float32, 1e-7)
    assert big.transforms == ("fft", "fft", "fft")
    small = descriptor._FFTPlan(cell, positions, (64, 64, 64), s, torch.device("cpu"), torch.float32, 1e-7)
    assert small.transforms == ("dense", "dense", "dense")  # at most 64 / 33 folded frequencies
    with pytest.raises(ElfcoreError, match="transforms"):
        descriptor._FFTPlan(cell, positions, (4, 4, 4), s, torch.device("cpu"), torch.float32, 1e-7,
                            transforms=("fft", "magic", "dense"))


def test_structure_factor_chunking_invariance(rng, monkeypatch):
    atoms = _atoms(rng, 9)
    shape = (6, 5, 7)
    full = compute_grid_descriptor(atoms, shape, SMALL, device="cpu", dtype=torch.float64)
    monkeypatch.setattr(descriptor._FFTPlan, "_SF_BUDGET", 1)  # one atom per chunk
    chunked = compute_grid_descriptor(atoms, shape, SMALL, device="cpu", dtype=torch.float64)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)


def test_direct_grid_method_equals_fft(rng):
    atoms = _atoms(rng, 6)
    shape = (4, 3, 5)
    a = compute_grid_descriptor(atoms, shape, SMALL, device="cpu", dtype=torch.float64, method="direct")
    b = compute_grid_descriptor(atoms, shape, SMALL, device="cpu", dtype=torch.float64)
    assert _relerr(b.numpy(), a.numpy()) <= 1e-5
    with pytest.raises(ElfcoreError, match="method"):
        compute_grid_descriptor(atoms, shape, SMALL, method="magic")


# --------------------------------------------------------------------------- invariances
def test_rotation_invariance(rng):
    atoms = _atoms(rng, 10)
    pts = rng.random((20, 3)) @ SKEW
    rot = _rotation(rng)
    ratoms = Atoms(atoms.symbols, positions=atoms.positions @ rot.T, cell=SKEW @ rot.T, pbc=True)
    a = compute_descriptor(atoms, pts, SMALL, device="cpu", dtype=torch.float64)
    b = compute_descriptor(ratoms, pts @ rot.T, SMALL, device="cpu", dtype=torch.float64)
    assert _relerr(b.numpy(), a.numpy()) <= 1e-9
    # the fft grid rotates with the cell
    ga = compute_grid_descriptor(atoms, (5, 4, 6), SMALL, device="cpu", dtype=torch.float64)
    gb = compute_grid_descriptor(ratoms, (5, 4, 6), SMALL, device="cpu", dtype=torch.float64)
    assert _relerr(gb.numpy(), ga.numpy()) <= 1e-9


def test_lattice_translation_and_permutation_invariance(rng):
    atoms = _atoms(rng, 10)
    pts = rng.random((20, 3)) @ SKEW
    a = compute_descriptor(atoms, pts, SMALL, device="cpu", dtype=torch.float64).numpy()
    shift = np.array([1, -2, 1]) @ SKEW
    b = compute_descriptor(atoms, pts + shift, SMALL, device="cpu", dtype=torch.float64).numpy()
    moved = atoms.copy()
    moved.positions = atoms.positions + np.array([[0, 1, 0], [2, 0, -1]] * 5) @ SKEW
    c = compute_descriptor(moved, pts, SMALL, device="cpu", dtype=torch.float64).numpy()
    perm = atoms[rng.permutation(len(atoms))]
    d = compute_descriptor(perm, pts, SMALL, device="cpu", dtype=torch.float64).numpy()
    for other in (b, c, d):
        assert _relerr(other, a) <= 1e-10
    ga = compute_grid_descriptor(atoms, (4, 5, 3), SMALL, device="cpu", dtype=torch.float64)
    gd = compute_grid_descriptor(perm, (4, 5, 3), SMALL, device="cpu", dtype=torch.float64)
    assert _relerr(gd.numpy(), ga.numpy()) <= 1e-10


def test_smooth_across_r_cut_and_inclusion_radius():
    """One atom moved radially: no jump or kink at r_cut, negligible jump at r_include."""
    s = DescriptorSettings(r_cut=3.0, n_radial=6, l_max=2, sigma=0.5)
    atoms = Atoms("H", positions=[[0.0, 0.0, 0.0]], cell=np.eye(3) * 30.0, pbc=True)
    direction = np.array([0.6, 0.0, 0.8])
    r = np.linspace(2.7, 3.3, 61)
    p = compute_descriptor(atoms, r[:, None] * direction, s, device="cpu", dtype=torch.float64).numpy()
    scale = np.abs(p).max(0) + 1e-300
    second = np.abs(np.diff(p, 2, axis=0)).max(0) / scale
    first = np.abs(np.diff(p, 1, axis=0)).max(0) / scale
    assert second.max() < 5 * np.median(np.abs(np.diff(p, 2, axis=0)) / scale, axis=0).max() + 1e-9
    assert first.max() < 0.2  # smooth: 0.01 Å steps change features by a small fraction
    r_inc = default_r_include(s)
    near = np.array([r_inc - 1e-6, r_inc + 1e-6])
    q = compute_descriptor(atoms, near[:, None] * direction, s, device="cpu", dtype=torch.float64).numpy()
    peak = compute_descriptor(atoms, [[1.0, 0, 0]], s, device="cpu", dtype=torch.float64).numpy()
    assert np.abs(q[0] - q[1]).max() <= 1e-7 * np.abs(peak).max()


# --------------------------------------------------------------------------- precision, chunks
def test_float32_matches_float64(rng):
    atoms = _atoms(rng, 10)
    pts = rng.random((30, 3)) @ SKEW
    s = DescriptorSettings()
    a = compute_descriptor(atoms, pts, s, device="cpu", dtype=torch.float32)
    b = compute_descriptor(atoms, pts, s, device="cpu", dtype=torch.float64)
    assert a.dtype == torch.float32 and b.dtype == torch.float64
    assert _relerr(a.numpy(), b.numpy()) <= 1e-6
    ga = compute_grid_descriptor(atoms, (6, 5, 7), s, device="cpu", dtype=torch.float32)
    gb = compute_grid_descriptor(atoms, (6, 5, 7), s, device="cpu", dtype=torch.float64)
    assert _relerr(ga.numpy(), gb.numpy()) <= 1e-5


def test_chunking_invariance(rng):
    atoms = _atoms(rng, 8)
    pts = rng.random((23, 3)) @ SKEW
    a = compute_descriptor(atoms, pts, SMALL, device="cpu", dtype=torch.float64)
    b = compute_descriptor(atoms, pts, SMALL, device="cpu", dtype=torch.float64, chunk_size=5)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    shape = (5, 4, 3)
    full = compute_grid_descriptor(atoms, shape, SMALL, device="cpu", dtype=torch.float64)
    parts = list(iter_grid_descriptor(atoms, shape, SMALL, device="cpu", dtype=torch.float64, slab=2))
    assert [(s0, s1) for s0, s1, _ in parts] == [(0, 24), (24, 48), (48, 60)]
    torch.testing.assert_close(torch.cat([f for _, _, f in parts]), full, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- degenerate input
@pytest.mark.parametrize("l_max", [0, 1, 3])
def test_empty_structure_and_no_points(l_max):
    s = DescriptorSettings(n_radial=3, l_max=l_max)
    empty = Atoms(cell=np.eye(3) * 4.0, pbc=True)
    out = compute_descriptor(empty, np.zeros((4, 3)), s, device="cpu")
    assert out.shape == (4, s.n_features) and torch.all(out == 0)
    grid = compute_grid_descriptor(empty, (2, 2, 2), s, device="cpu")
    assert grid.shape == (8, s.n_features) and torch.all(grid == 0)
    h = Atoms("H", positions=[[1, 1, 1]], cell=np.eye(3) * 4.0, pbc=True)
    assert compute_descriptor(h, np.zeros((0, 3)), s, device="cpu").shape == (0, s.n_features)


def test_bad_structures_refused():
    s = DescriptorSettings(n_radial=3, l_max=1)
    with pytest.raises(StructureError, match="hydrogen"):
        compute_descriptor(Atoms("HO", positions=[[0, 0, 0], [1, 0, 0]], cell=np.eye(3) * 4, pbc=True),
                           [[0, 0, 0]], s, device="cpu")
    with pytest.raises(StructureError, match="NaN"):
        compute_descriptor(Atoms("H", positions=[[np.nan, 0, 0]], cell=np.eye(3) * 4, pbc=True),
                           [[0, 0, 0]], s, device="cpu")
    with pytest.raises(StructureError, match="cell"):
        compute_grid_descriptor(Atoms("H", positions=[[0, 0, 0]]), (2, 2, 2), s, device="cpu")


def test_ill_conditioned_basis(rng):
    """r_cut = 1.5 Å with 10 functions: DScribe cannot orthonormalise, elfcore does it in 60 digits."""
    s = DescriptorSettings(r_cut=1.5, n_radial=10, l_max=2)
    r = np.linspace(0, 8, 16001)
    g = radial_basis(s, r, 0)
    gram = (g[:, None, :] * g[None, :, :] * r**2).sum(-1) * (r[1] - r[0])
    np.testing.assert_allclose(gram, np.eye(10), atol=1e-3)
    atoms = _atoms(rng, 6)
    idx = rng.choice(60, size=20, replace=False)
    direct = compute_descriptor(atoms, grid_points_frac((4, 3, 5))[idx] @ SKEW, s, device="cpu", dtype=torch.float64)
    fft = compute_grid_descriptor(atoms, (4, 3, 5), s, device="cpu", dtype=torch.float64)
    assert _relerr(fft[idx].numpy(), direct.numpy()) <= 1e-4
    with pytest.raises(ElfcoreError, match="ill-conditioned"):
        compute_descriptor(atoms, [[0, 0, 0]], DescriptorSettings(r_cut=1.2, n_radial=12), device="cpu")


def test_odd_l_vanish_at_inversion_centre():
    """An atom of a simple cubic lattice is an inversion centre: its odd-l features vanish."""
    s = DescriptorSettings(r_cut=3.0, n_radial=3, l_max=2, sigma=0.5)
    atoms = Atoms("H", positions=[[0, 0, 0]], cell=np.eye(3) * 1.5, pbc=True)
    p = compute_descriptor(atoms, [[0.0, 0.0, 0.0]], s, device="cpu", dtype=torch.float64).numpy()[0]
    labels = feature_labels(s)
    l2 = np.array([v for v, (_, _, l) in zip(p, labels) if l == 1])
    assert np.abs(l2).max() <= 1e-10 * np.abs(p).max()  # odd l vanish at an inversion centre
    assert math.isfinite(float(p.sum()))


# --------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(rng):
    atoms = _atoms(rng, 10)
    pts = rng.random((30, 3)) @ SKEW
    s = DescriptorSettings()
    a = compute_descriptor(atoms, pts, s, device="cpu", dtype=torch.float64)
    b = compute_descriptor(atoms, pts, s, device="cuda", dtype=torch.float64)
    assert b.device.type == "cuda"
    # float64 floor of the n_radial = 10 basis (ill-conditioned orthonormalisation): on the CPU alone,
    # permuting the atoms or shifting them by a lattice vector already changes features by 3–5e-10
    # relative; CUDA vs CPU measured 1.0e-9 on an H100
    assert _relerr(b.cpu().numpy(), a.numpy()) <= 1e-8
    ga = compute_grid_descriptor(atoms, (8, 7, 9), s, device="cpu", dtype=torch.float32)
    gb = compute_grid_descriptor(atoms, (8, 7, 9), s, device="cuda", dtype=torch.float32)
    assert _relerr(gb.cpu().numpy(), ga.numpy()) <= 1e-5
