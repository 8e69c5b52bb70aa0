"""Tests of the multi-species grid-point SOAP descriptor (species-resolved densities, hydrides)."""
import numpy as np
import pytest
import torch
from ase import Atoms

from elfcore.descriptor import (
    COMPRESSION_MODES,
    DescriptorSettings,
    compute_descriptor,
    compute_grid_descriptor,
    dscribe_r_include,
    feature_labels,
    iter_grid_descriptor,
)
from elfcore.errors import ElfcoreError, StructureError
from elfcore.grid import grid_points_frac
from tests.descriptor_helpers import random_rotation as _rotation
from tests.descriptor_helpers import relerr as _relerr

SKEW = np.array([[4.0, 0.3, 0.1], [1.2, 3.8, -0.4], [0.5, 0.9, 4.3]])  # shorter than 2·r_cut
SMALL = dict(r_cut=3.0, n_radial=4, l_max=3, sigma=0.5)
F64 = dict(device="cpu", dtype=torch.float64)


def _hydride(rng, symbols=("H",) * 9 + ("La",) * 2, cell=SKEW):
    return Atoms(list(symbols), positions=rng.random((len(symbols), 3)) @ cell, cell=cell, pbc=True)


# --------------------------------------------------------------------------- settings
def test_species_setting_validated_and_canonical():
    s = DescriptorSettings(species=["La", "H", "Ca"])
    assert s.species == ("H", "Ca", "La")  # increasing atomic number
    other = DescriptorSettings(species=("Ca", "La", "H"))
    assert s == other and hash(s) == hash(other)
    assert DescriptorSettings.from_dict(s.to_dict()) == s
    assert s.to_dict()["species"] == ["H", "Ca", "La"]
    for compression in COMPRESSION_MODES:
        t = DescriptorSettings(species=("H", "Y"), compression=compression)
        assert DescriptorSettings.from_dict(t.to_dict()) == t
        assert len(feature_labels(t)) == t.n_features
    with pytest.raises(ElfcoreError, match="'Xx' is not a chemical symbol"):
        DescriptorSettings(species=("H", "Xx"))
    with pytest.raises(ElfcoreError, match="must include 'H'"):
        DescriptorSettings(species=("La",))
    with pytest.raises(ElfcoreError, match="once"):
        DescriptorSettings(species=("H", "La", "H"))
    with pytest.raises(ElfcoreError, match="list of chemical symbols"):
        DescriptorSettings(species="HLa")
    with pytest.raises(ElfcoreError, match="compression='mu3'"):
        DescriptorSettings(compression="mu3")


def test_hydrogen_settings_dict_unchanged():
    """A hydrogen descriptor serialises exactly as before (model headers, hashes, cache keys)."""
    s = DescriptorSettings()
    assert s.to_dict() == {"r_cut": 3.0, "n_radial": 10, "l_max": 2, "sigma": 0.5}
    assert DescriptorSettings.from_dict({"r_cut": 3.0, "n_radial": 10, "l_max": 2, "sigma": 0.5}) == s
    assert s.species == ("H",) and s.n_features == 165


def test_feature_counts():
    n1, n2 = 10 * 11 // 2 * 3, 10 * 10 * 3  # one density with itself / two different densities
    counts = {m: [DescriptorSettings(species=sp, compression=m).n_features
                  for sp in (("H",), ("H", "La"), ("H", "Ca", "La"))] for m in COMPRESSION_MODES}
    assert counts == {
        "off": [n1, 2 * n1 + n2, 3 * n1 + 3 * n2],
        "mu1nu1": [n2, 2 * n2, 3 * n2],
        "crossover": [n1, 2 * n1, 3 * n1],
        "mu2": [n1, n1, n1],
    }


# --------------------------------------------------------------------------- DScribe
@pytest.mark.reference
@pytest.mark.parametrize(
    "metals, compression",
    [(("La",), mode) for mode in COMPRESSION_MODES] + [(("Ca", "La"), "off"), (("Ca", "La"), "mu1nu1")],
)
def test_matches_dscribe(rng, metals, compression):
    dscribe = pytest.importorskip("dscribe.descriptors")
    from ase.data import atomic_numbers

    species = ("H",) + metals
    atoms = _hydride(rng, ("H",) * 8 + metals * 2)
    points = rng.random((12, 3)) @ SKEW
    s = DescriptorSettings(**SMALL, species=species, compression=compression)
    weighting = {x: float(atomic_numbers[x]) for x in species} if compression == "mu2" else None
    soap = dscribe.SOAP(species=list(species), r_cut=s.r_cut, n_max=s.n_radial, l_max=s.l_max, sigma=s.sigma,
                        rbf="gto", periodic=True, compression={"mode": compression, "species_weighting": weighting})
    assert soap.get_number_of_features() == s.n_features
    ref = soap.create(atoms, centers=points)
    mine = compute_descriptor(atoms, points, s, **F64, r_include=dscribe_r_include(s))
    assert _relerr(mine.numpy(), ref) <= 1e-5
    if compression == "off":  # the pair blocks sit where DScribe's get_location puts them
        labels = feature_labels(s)
        for a in species:
            for b in species[species.index(a):]:
                rows = [i for i, lab in enumerate(labels) if lab[:2] == (a, b)]
                block = soap.get_location((a, b))
                assert rows == list(range(block.start, block.stop))


# --------------------------------------------------------------------------- fft = direct
# (4, 3, 5) is coarser than the band limit along every axis (frequencies folded)
@pytest.mark.parametrize(
    "shape, compression", [((9, 8, 10), "off"), ((4, 3, 5), "off"), ((4, 3, 5), "mu1nu1"), ((4, 3, 5), "mu2")]
)
def test_fft_path_matches_direct(rng, shape, compression):
    atoms = _hydride(rng, ("H",) * 7 + ("Ca", "La", "La"))
    s = DescriptorSettings(**SMALL, species=("H", "Ca", "La"), compression=compression)
    idx = rng.choice(int(np.prod(shape)), size=30, replace=False)
    direct = compute_descriptor(atoms, grid_points_frac(shape)[idx] @ SKEW, s, **F64)
    fft = compute_grid_descriptor(atoms, shape, s, **F64, slab=3)
    assert fft.shape == (int(np.prod(shape)), s.n_features)
    assert _relerr(fft[idx].numpy(), direct.numpy()) <= 1e-5
    grid_direct = compute_grid_descriptor(atoms, (3, 2, 2), s, **F64, method="direct")
    grid_fft = compute_grid_descriptor(atoms, (3, 2, 2), s, **F64)
    assert _relerr(grid_fft.numpy(), grid_direct.numpy()) <= 1e-5


def test_float32_matches_float64(rng):
    atoms = _hydride(rng)
    s = DescriptorSettings(species=("H", "La"))
    pts = rng.random((10, 3)) @ SKEW
    a = compute_descriptor(atoms, pts, s, device="cpu", dtype=torch.float32)
    b = compute_descriptor(atoms, pts, s, **F64)
    assert a.dtype == torch.float32 and _relerr(a.numpy(), b.numpy()) <= 1e-6
    ga = compute_grid_descriptor(atoms, (5, 4, 6), s, device="cpu", dtype=torch.float32)
    gb = compute_grid_descriptor(atoms, (5, 4, 6), s, **F64)
    assert _relerr(ga.numpy(), gb.numpy()) <= 1e-5


# --------------------------------------------------------------------------- invariances
def test_species_permutation_invariance(rng):
    """Reordering the atoms (so other indices carry each element) or listing species in another order
    changes nothing."""
    atoms = _hydride(rng, ("H", "La", "H", "Ca", "H", "H", "La", "H", "H"))
    pts = rng.random((15, 3)) @ SKEW
    s = DescriptorSettings(**SMALL, species=("H", "Ca", "La"))
    s_other = DescriptorSettings(**SMALL, species=("La", "H", "Ca"))
    assert s_other == s and feature_labels(s_other) == feature_labels(s)
    perm = atoms[rng.permutation(len(atoms))]
    a = compute_descriptor(atoms, pts, s, **F64).numpy()
    b = compute_descriptor(perm, pts, s_other, **F64).numpy()
    assert _relerr(b, a) <= 1e-10
    ga = compute_grid_descriptor(atoms, (4, 5, 3), s, **F64)
    gb = compute_grid_descriptor(perm, (4, 5, 3), s_other, **F64)
    assert _relerr(gb.numpy(), ga.numpy()) <= 1e-10
    # the species blocks do tell the elements apart: swapping Ca and La changes the features
    swapped = atoms.copy()
    swapped.set_chemical_symbols([{"Ca": "La", "La": "Ca"}.get(x, x) for x in atoms.get_chemical_symbols()])
    c = compute_descriptor(swapped, pts, s, **F64).numpy()
    assert np.abs(c - a).max() > 1e-3 * np.abs(a).max()


@pytest.mark.parametrize("compression", ["off", "mu1nu1"])
def test_rotation_invariance(rng, compression):
    atoms = _hydride(rng)
    pts = rng.random((15, 3)) @ SKEW
    rot = _rotation(rng)
    ratoms = Atoms(atoms.symbols, positions=atoms.positions @ rot.T, cell=SKEW @ rot.T, pbc=True)
    s = DescriptorSettings(**SMALL, species=("H", "La"), compression=compression)
    a = compute_descriptor(atoms, pts, s, **F64)
    b = compute_descriptor(ratoms, pts @ rot.T, s, **F64)
    assert _relerr(b.numpy(), a.numpy()) <= 1e-9
    ga = compute_grid_descriptor(atoms, (5, 4, 6), s, **F64)  # the grid rotates with the cell
    gb = compute_grid_descriptor(ratoms, (5, 4, 6), s, **F64)
    assert _relerr(gb.numpy(), ga.numpy()) <= 1e-9


def test_periodic_wrap(rng):
    """Atoms and points moved by lattice vectors, and a supercell, give the same features."""
    atoms = _hydride(rng)
    s = DescriptorSettings(**SMALL, species=("H", "La"))
    pts = rng.random((12, 3)) @ SKEW
    a = compute_descriptor(atoms, pts, s, **F64).numpy()
    moved = atoms.copy()
    moved.positions = atoms.positions + rng.integers(-2, 3, size=(len(atoms), 3)) @ SKEW
    b = compute_descriptor(moved, pts + np.array([1, -1, 2]) @ SKEW, s, **F64).numpy()
    c = compute_descriptor(atoms.repeat((2, 1, 1)), pts, s, **F64).numpy()
    for other in (b, c):
        assert _relerr(other, a) <= 1e-9
    ga = compute_grid_descriptor(atoms, (4, 3, 5), s, **F64).numpy().reshape(4, 3, 5, -1)
    gc = compute_grid_descriptor(atoms.repeat((2, 1, 1)), (8, 3, 5), s, **F64).numpy().reshape(8, 3, 5, -1)
    assert _relerr(gc[:4].reshape(60, -1), ga.reshape(60, -1)) <= 1e-7
    assert _relerr(gc[4:].reshape(60, -1), ga.reshape(60, -1)) <= 1e-7


# --------------------------------------------------------------------------- hydrogen unchanged
def test_pure_hydrogen_unchanged(rng):
    """On a hydrogen structure the H–H block is the hydrogen descriptor, the metal blocks are zero, and
    every compression of one species (but mu1nu1) is the hydrogen descriptor itself."""
    atoms = _hydride(rng, ("H",) * 10)
    pts = rng.random((12, 3)) @ SKEW
    h = DescriptorSettings(**SMALL)
    ref = compute_descriptor(atoms, pts, h, **F64)
    ref_grid = compute_grid_descriptor(atoms, (4, 3, 5), h, **F64)
    for compression in ("crossover", "mu2"):
        same = DescriptorSettings(**SMALL, compression=compression)
        assert torch.equal(compute_descriptor(atoms, pts, same, **F64), ref)
        assert torch.equal(compute_grid_descriptor(atoms, (4, 3, 5), same, **F64), ref_grid)
    s = DescriptorSettings(**SMALL, species=("H", "La"))
    labels = feature_labels(s)
    hh = [i for i, lab in enumerate(labels) if lab[:2] == ("H", "H")]
    assert [lab[2:] for lab in labels[: len(hh)]] == feature_labels(h)
    for out, base in ((compute_descriptor(atoms, pts, s, **F64), ref),
                      (compute_grid_descriptor(atoms, (4, 3, 5), s, **F64), ref_grid)):
        assert _relerr(out[:, hh].numpy(), base.numpy()) <= 1e-12
        assert torch.all(out[:, len(hh):] == 0)
    # mu1nu1 with one species: all (n, n') pairs of the one density
    full = compute_descriptor(atoms, pts, DescriptorSettings(**SMALL, compression="mu1nu1"), **F64)
    pick = [feature_labels(DescriptorSettings(**SMALL, compression="mu1nu1")).index(t) for t in feature_labels(h)]
    assert _relerr(full[:, pick].numpy(), ref.numpy()) <= 1e-12


def test_empty_and_metal_only_structures(rng):
    s = DescriptorSettings(n_radial=3, l_max=1, species=("H", "La"))
    empty = Atoms(cell=np.eye(3) * 4.0, pbc=True)
    assert torch.all(compute_descriptor(empty, np.zeros((3, 3)), s, device="cpu") == 0)
    assert compute_grid_descriptor(empty, (2, 2, 2), s, device="cpu").shape == (8, s.n_features)
    la = Atoms("La", positions=[[1, 1, 1]], cell=np.eye(3) * 4.0, pbc=True)
    out = compute_descriptor(la, [[0.0, 0.0, 0.0]], s, device="cpu", dtype=torch.float64)[0]
    labels = feature_labels(s)
    assert all(out[i] == 0 for i, lab in enumerate(labels) if "H" in lab[:2])
    assert out.abs().max() > 0
    parts = list(iter_grid_descriptor(la, (2, 2, 2), s, device="cpu", dtype=torch.float64, slab=1))
    assert [(a, b) for a, b, _ in parts] == [(0, 4), (4, 8)]


# --------------------------------------------------------------------------- refusals
def test_unknown_element_refused():
    s = DescriptorSettings(n_radial=3, l_max=1, species=("H", "La"))
    ca_h = Atoms("CaH2", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], cell=np.eye(3) * 4, pbc=True)
    with pytest.raises(StructureError, match=r"Ca \(Z=20\), not among the descriptor's species \['H', 'La'\]"):
        compute_descriptor(ca_h, [[0, 0, 0]], s, device="cpu")
    with pytest.raises(StructureError, match="Ca"):
        compute_grid_descriptor(ca_h, (2, 2, 2), s, device="cpu")
    with pytest.raises(StructureError, match="Ca"):
        compute_grid_descriptor(ca_h, (2, 2, 2), s, device="cpu", method="direct")
    la_h = Atoms("LaH", positions=[[0, 0, 0], [1, 0, 0]], cell=np.eye(3) * 4, pbc=True)
    with pytest.raises(StructureError, match=r"La \(Z=57\).*\['H'\] \(hydrogen only\)"):
        compute_descriptor(la_h, [[0, 0, 0]], DescriptorSettings(n_radial=3, l_max=1), device="cpu")


# --------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compression", ["off", "mu2"])
def test_cuda_matches_cpu(rng, compression):
    atoms = _hydride(rng, ("H",) * 8 + ("Ca", "La", "La"))
    s = DescriptorSettings(species=("H", "Ca", "La"), compression=compression)
    pts = rng.random((20, 3)) @ SKEW
    a = compute_descriptor(atoms, pts, s, device="cpu", dtype=torch.float64)
    b = compute_descriptor(atoms, pts, s, device="cuda", dtype=torch.float64)
    assert b.device.type == "cuda" and _relerr(b.cpu().numpy(), a.numpy()) <= 1e-8
    ga = compute_grid_descriptor(atoms, (8, 7, 9), s, device="cpu", dtype=torch.float32)
    gb = compute_grid_descriptor(atoms, (8, 7, 9), s, device="cuda", dtype=torch.float32)
    assert _relerr(gb.cpu().numpy(), ga.numpy()) <= 1e-5
