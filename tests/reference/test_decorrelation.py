"""Replica-decorrelation and g(r) checks on synthetic structures."""
import numpy as np
import pytest
from ase import Atoms

from elfcore.reference.decorrelation import (
    RDF_RMS_MAX,
    REPLICA_RATIO_MAX,
    radial_distribution,
    rdf_difference,
    replica_decorrelation,
    structure_factor,
)


def _random_fluid(n, length, seed, min_dist=0.0):
    """Uniform random points in a cube (rejecting pairs closer than ``min_dist``)."""
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n:
        p = rng.uniform(0, length, 3)
        if min_dist > 0 and pos:
            d = np.asarray(pos) - p
            d -= length * np.round(d / length)
            if np.min(np.linalg.norm(d, axis=1)) < min_dist:
                continue
        pos.append(p)
    return Atoms(f"H{n}", positions=pos, cell=[length] * 3, pbc=True)


def test_structure_factor_of_one_atom_and_of_a_lattice():
    one = Atoms("H", positions=[[0.3, 0.1, 0.2]], cell=[2.0] * 3, pbc=True)
    k = np.array([[np.pi, 0, 0], [0.5, 0.7, 0.0]])
    np.testing.assert_allclose(structure_factor(one, k), [1.0, 1.0])
    # simple cubic lattice: Bragg peak of height N at a reciprocal vector, zero in between
    lat = Atoms("H", positions=[[0, 0, 0]], cell=[1.5] * 3, pbc=True).repeat(4)
    g = 2 * np.pi / 1.5
    s = structure_factor(lat, np.array([[g, 0, 0], [g / 4, 0, 0]]))
    np.testing.assert_allclose(s, [64.0, 0.0], atol=1e-9)


def test_perfect_replica_fails_and_random_fluid_passes():
    small = _random_fluid(64, 5.8, seed=1, min_dist=0.9)
    replica = small.repeat(2)
    r = replica_decorrelation(replica, 2)
    assert not r["decorrelated"] and r["ratio"] > 1e6 and r["s_fluid"] < 1e-12
    assert r["k_min"] == pytest.approx(2 * np.pi / 5.8)
    fluid = _random_fluid(512, 11.6, seed=2, min_dist=0.9)
    f = replica_decorrelation(fluid, 2)
    assert f["decorrelated"] and 0.4 < f["ratio"] < REPLICA_RATIO_MAX
    assert f["n_replica"] > 10


def test_partly_moved_replica_sits_between():
    rng = np.random.default_rng(3)
    replica = _random_fluid(64, 5.8, seed=4, min_dist=0.9).repeat(2)
    small_moves = replica.copy()
    small_moves.positions += rng.normal(0, 0.15, replica.positions.shape)
    big_moves = replica.copy()
    big_moves.positions += rng.normal(0, 3.0, replica.positions.shape)
    r_small = replica_decorrelation(small_moves, 2)["ratio"]
    r_big = replica_decorrelation(big_moves, 2)["ratio"]
    assert r_small > REPLICA_RATIO_MAX  # copies still nearly in phase
    assert r_big < REPLICA_RATIO_MAX  # copies moved apart


def test_replica_decorrelation_rejects_bad_input():
    atoms = _random_fluid(8, 3.0, seed=5)
    with pytest.raises(ValueError, match="replicas"):
        replica_decorrelation(atoms, 0)
    with pytest.raises(ValueError, match="no periodic cell"):
        replica_decorrelation(Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]]), 2)


def test_ideal_gas_rdf_is_one_and_periodic_wrap_counts_images():
    frames = [_random_fluid(200, 8.0, seed=s) for s in range(5)]
    r, g = radial_distribution(frames, r_max=3.9, bins=13)
    assert np.all(np.abs(g[2:] - 1.0) < 0.15)
    # two atoms seen only through the boundary: distance 0.5 Å via the periodic image
    pair = Atoms("H2", positions=[[0.1, 0, 0], [3.6, 0, 0]], cell=[4.0] * 3, pbc=True)
    r, g = radial_distribution([pair], r_max=2.0, bins=20)
    assert g[np.argmin(np.abs(r - 0.55))] > 0 and np.count_nonzero(g) == 1
    with pytest.raises(ValueError, match="half the narrowest"):
        radial_distribution([pair], r_max=2.5)


def test_rdf_difference_same_fluid_matches_other_structure_does_not():
    a = [_random_fluid(256, 9.0, seed=s, min_dist=0.8) for s in range(6)]
    b = [_random_fluid(64, 5.7, seed=10 + s, min_dist=0.8) for s in range(40)]
    same = rdf_difference(a, b, r_max=2.8)
    assert same["matches"] and same["rms"] < RDF_RMS_MAX
    lattice = [Atoms("H", positions=[[0, 0, 0]], cell=[1.4] * 3, pbc=True).repeat(4)]
    other = rdf_difference(lattice, b, r_max=2.8)
    assert not other["matches"] and other["rms"] > RDF_RMS_MAX
