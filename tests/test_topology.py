"""Tests of elfcore.topology on periodic fields with known percolation thresholds."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from elfcore.grid import make_field
from elfcore.topology import (
    TopologySettings,
    atom_basins,
    bond_graph_percolation,
    critical_points,
    exclusion_mask,
    merge_tree,
    networking_value,
    percolation_thresholds,
    topology_summary,
)

HEX = np.array([[3.0, 0.0, 0.0], [-1.5, 1.5 * np.sqrt(3.0), 0.0], [0.0, 0.0, 2.5]])


def frac_mesh(shape):
    axes = [np.arange(n) / n for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def cosine_field(shape, amps, cell=None):
    """A cos 2πs1 + B cos 2πs2 + C cos 2πs3: max at 0, bond points flip one cosine."""
    s1, s2, s3 = frac_mesh(shape)
    a, b, c = amps
    vals = a * np.cos(2 * np.pi * s1) + b * np.cos(2 * np.pi * s2) + c * np.cos(2 * np.pi * s3)
    return make_field(vals, np.eye(3) * 4.0 if cell is None else cell)


def hexagonal_field(shape, c_amp):
    """Triangular-lattice cosines in the ab plane (a, b at 120°) plus C cos 2πs3."""
    s1, s2, s3 = frac_mesh(shape)
    vals = (
        np.cos(2 * np.pi * s1)
        + np.cos(2 * np.pi * s2)
        + np.cos(2 * np.pi * (s1 - s2))
        + c_amp * np.cos(2 * np.pi * s3)
    )
    return make_field(vals, HEX)


def gaussian_field(shape, cell, centres, sigma, heights=None, numbers=None):
    """Field of periodic Gaussians at Cartesian ``centres`` (lattice sum over 5³ images)."""
    cell = np.asarray(cell, float)
    centres = np.asarray(centres, float).reshape(-1, 3)
    heights = np.ones(len(centres)) if heights is None else np.asarray(heights, float)
    sigma = np.broadcast_to(np.asarray(sigma, float), (len(centres),))
    s = np.stack(frac_mesh(shape), axis=-1)
    pts = s @ cell
    vals = gaussian_at(pts, cell, centres, sigma, heights)
    return make_field(vals, cell, centres, numbers)


def gaussian_at(pts, cell, centres, sigma, heights):
    pts = np.asarray(pts, float)
    out = np.zeros(pts.shape[:-1])
    rng = range(-2, 3)
    shifts = np.array([[i, j, k] for i in rng for j in rng for k in rng], float) @ cell
    for c, sg, h in zip(centres, sigma, heights):
        for t in shifts:
            d2 = np.sum((pts - c - t) ** 2, axis=-1)
            out += h * np.exp(-0.5 * d2 / sg**2)
    return out


# ----------------------------------------------------------------------------- settings
def test_settings_validate_and_roundtrip():
    with pytest.raises(ValueError, match="exclude_radius"):
        TopologySettings(exclude_radius=-1.0)
    with pytest.raises(ValueError, match="unknown"):
        TopologySettings.from_dict({"radius": 1.0})
    s = TopologySettings(exclude_radius=0.7, refine=False)
    assert TopologySettings.from_dict(s.to_dict()) == s


# ----------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("shape", [(16, 16, 16), (17, 15, 13)])
def test_cosine_thresholds_closed_form(shape):
    a, b, c = 0.5, 1.0, 2.0
    field = cosine_field(shape, (a, b, c))
    exact = {1: b + c - a, 2: a + c - b, 3: a + b - c}  # chains ∥ a, layers ∥ ab, then 3D
    grid = TopologySettings(upsample=1)  # sweep the grid as given
    fast = percolation_thresholds(field, grid)
    full = merge_tree(field, grid).percolation
    even = all(n % 2 == 0 for n in shape)
    for k in (1, 2, 3):
        assert fast.values[k] == pytest.approx(exact[k], abs=1e-3)
        assert full.values[k] == pytest.approx(fast.values[k], abs=1e-12)
        assert fast.grid_values[k] == full.grid_values[k]
        assert fast.refined[k]
        if even:  # the bond points lie on grid points
            assert fast.grid_values[k] == pytest.approx(exact[k], abs=1e-12)
        else:  # they do not: the grid value is off, the refined one is not
            assert abs(fast.grid_values[k] - exact[k]) > 5 * abs(fast.values[k] - exact[k])
    assert networking_value(field) == pytest.approx(exact[3], abs=1e-3)  # automatic upsampling


def test_equal_cosines_percolate_at_once_in_triclinic_cell():
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 3.5, 0.0], [0.5, 0.7, 3.0]])
    field = cosine_field((18, 18, 18), (1.0, 1.0, 1.0), cell)
    p = percolation_thresholds(field)
    assert [p.values[k] for k in (1, 2, 3)] == pytest.approx([1.0, 1.0, 1.0], abs=1e-9)


@pytest.mark.parametrize(
    "c_amp, exact",
    [(0.5, {1: 2.5, 2: -0.5, 3: -0.5}), (3.0, {1: 2.0, 2: 2.0, 3: 0.0})],
    ids=["chains-along-c", "layers-in-ab"],
)
def test_hexagonal_cosines(c_amp, exact):
    field = hexagonal_field((18, 18, 14), c_amp)
    p = percolation_thresholds(field)
    for k in (1, 2, 3):
        assert p.values[k] == pytest.approx(exact[k], abs=1e-6)
    bg = bond_graph_percolation(critical_points(field))
    assert bg.values[3] == pytest.approx(exact[3], abs=1e-6)


def test_gaussians_on_simple_cubic_lattice():
    a, sigma = 2.0, 0.45
    cell = np.eye(3) * a
    field = gaussian_field((20, 20, 20), cell, [[0.3, 0.2, 0.1]], sigma)
    mid = gaussian_at(np.array([0.3 + a / 2, 0.2, 0.1]), cell, np.array([[0.3, 0.2, 0.1]]), [sigma], [1.0])
    p = percolation_thresholds(field)
    for k in (1, 2, 3):  # cubic symmetry: all directions at the bond midpoint
        assert p.values[k] == pytest.approx(float(mid), rel=1e-4)


# ----------------------------------------------------------------------------- invariances
def test_origin_shift_and_supercell_invariance():
    rng = np.random.default_rng(3)
    cell = np.array([[3.0, 0.0, 0.0], [0.4, 3.2, 0.0], [0.0, 0.3, 2.8]])
    centres = rng.random((5, 3)) @ cell
    field = gaussian_field((15, 16, 14), cell, centres, 0.5, heights=rng.uniform(0.6, 1.0, 5))
    grid = TopologySettings(upsample=1)
    ref = percolation_thresholds(field, grid)
    rolled = make_field(np.roll(field.values, (4, -3, 7), axis=(0, 1, 2)), cell)
    tiled = make_field(np.tile(field.values, (2, 1, 3)), cell * np.array([[2], [1], [3]]))
    for other in (percolation_thresholds(rolled, grid), percolation_thresholds(tiled, grid)):
        for k in (1, 2, 3):
            assert other.grid_values[k] == ref.grid_values[k]
            assert other.values[k] == pytest.approx(ref.values[k], abs=1e-9)


# ----------------------------------------------------------------------------- bcp route, Morse
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bcp_phi_equals_merge_tree_phi_and_morse(seed):
    rng = np.random.default_rng(seed)
    cell = np.diag([3.0, 3.3, 2.7])
    centres = rng.random((4, 3)) @ cell
    field = gaussian_field((22, 24, 20), cell, centres, 0.55, heights=rng.uniform(0.5, 1.0, 4))
    cps = critical_points(field)
    assert cps.morse_sum == 0, cps.counts
    assert np.all(cps.bond_attractors >= 0)
    bg = bond_graph_percolation(cps)
    p = percolation_thresholds(field)
    for k in (1, 2, 3):
        assert bg.values[k] == pytest.approx(p.values[k], abs=1e-6)
    assert bg.values_2dec[3] == round(bg.values[3], 2)


def test_morse_counts_simple_cubic_cosines():
    cps = critical_points(cosine_field((17, 17, 17), (1.0, 1.0, 1.0)))
    assert cps.counts == {"max": 1, "bond": 3, "ring": 3, "cage": 1}
    assert cps.morse_sum == 0
    b = cps.bonds()
    assert sorted(abs(np.array(x["translation"])).sum() for x in b) == [1, 1, 1]
    assert all(x["attractors"] == [0, 0] for x in b)


# ----------------------------------------------------------------------------- molecules
def dimer_field(sigma=0.3, a=2.2, d=0.74, shape=(28, 24, 24)):
    cell = np.diag([a, a * 1.05, a * 1.1])
    centres = np.array([[-d / 2, 0.0, 0.0], [d / 2, 0.0, 0.0]]) + 0.25
    return gaussian_field(shape, cell, centres, sigma), cell, centres


def test_molecularity_of_dimers():
    field, cell, centres = dimer_field()
    sig = [0.3, 0.3]
    h = [1.0, 1.0]
    centre = centres.mean(axis=0)
    intra = float(gaussian_at(centre, cell, centres, sig, h))
    inter = float(gaussian_at(centre + [cell[0, 0] / 2, 0, 0], cell, centres, sig, h))
    mt = merge_tree(field)
    assert mt.phi_star == pytest.approx(intra, rel=1e-3)
    assert mt.molecularity == pytest.approx(inter, rel=1e-3)
    assert mt.percolation.values[1] == pytest.approx(inter, rel=1e-3)  # chains along a
    assert [(m[0], m[1], m[2]) for m in mt.molecules] in ([(0, 1, (0, 0, 0))], [(1, 0, (0, 0, 0))])
    assert mt.unpaired == []
    # the same molecule seen across the cell boundary: translation (−1, 0, 0) or (1, 0, 0)
    shifted = centres - [0.25, 0, 0]  # molecule centred on the a = 0 face
    f2 = gaussian_field((28, 24, 24), cell, np.mod(shifted, cell[0, 0]), 0.3)
    mt2 = merge_tree(f2)
    assert mt2.phi_star == pytest.approx(intra, rel=1e-3)
    assert abs(mt2.molecules[0][2][0]) == 1


def test_molecule_as_one_blob_uses_nucleus_value():
    # wide Gaussians: the bond midpoint is the maximum, so both nuclei enter the
    # superlevel set at their own (interpolated) value
    field, cell, centres = dimer_field(sigma=0.5, a=3.0, shape=(30, 30, 30))
    nucleus = float(gaussian_at(centres[0], cell, centres, [0.5, 0.5], [1.0, 1.0]))
    mt = merge_tree(field)
    assert mt.phi_star == pytest.approx(nucleus, rel=1e-4)


def test_basins_of_dimers():
    field, cell, centres = dimer_field()
    cps = critical_points(field)
    att, tr = atom_basins(field, cps)
    # one attractor per nucleus, both distinct
    assert np.all(att >= 0) and att[0] != att[1]
    for i in range(2):
        pos = cps.positions_frac[cps.maxima[att[i]]] @ cell
        d = pos + tr[i] @ cell - centres[i]
        assert np.linalg.norm(d) < 0.05


# ----------------------------------------------------------------------------- other atoms
def test_exclusion_of_heavy_atom_spheres():
    # chains/layers cosine field; a "heavy atom" sits on the only 3D bond point (0, 0, 1/2)
    n, a = 16, 4.0
    base = cosine_field((n, n, n), (0.5, 1.0, 2.0))
    heavy = np.array([[0.0, 0.0, a / 2]])
    field = make_field(base.values, base.attrs["cell"], heavy, [26])
    radius = 0.5
    mask = exclusion_mask(field, radius)
    pts = np.stack(frac_mesh(field.shape), -1) * a
    d = pts - heavy[0]
    d -= a * np.rint(d / a)
    assert np.array_equal(mask, np.linalg.norm(d, axis=-1) <= radius)
    # with the sphere left out, the 3D network has to cross the plane c = 1/2 elsewhere:
    # on the grid the best crossing is the highest voxel of that plane outside the sphere
    plane = field.values[:, :, n // 2]
    expect3 = float(plane[~mask[:, :, n // 2]].max())
    settings = TopologySettings(exclude_radius=radius, refine=False, upsample=1)
    for p in (percolation_thresholds(field, settings), merge_tree(field, settings).percolation):
        assert p.values[1] == pytest.approx(2.5) and p.values[2] == pytest.approx(1.5)
        assert p.values[3] == pytest.approx(expect3, abs=1e-12)
    assert expect3 < -0.7  # well below the -0.5 of the bond point
    assert networking_value(field) == pytest.approx(-0.5, abs=1e-9)
    # the excluded bond point is also gone from the critical points
    cps = critical_points(field, TopologySettings(exclude_radius=radius))
    assert cps.counts["bond"] == 2


def test_never_percolates_when_all_excluded():
    a = 3.0
    field = gaussian_field((12, 12, 12), np.eye(3) * a, [[1.5, 1.5, 1.5]], 0.5, numbers=[8])
    p = percolation_thresholds(field, TopologySettings(exclude_radius=10.0, upsample=1))
    assert p.values == {1: None, 2: None, 3: None}
    assert merge_tree(field, TopologySettings(exclude_radius=10.0, upsample=1)).percolation.values[3] is None


def test_upsampling_keeps_grid_points_and_interpolates():
    from elfcore.grid import interpolate
    from elfcore.topology import upsample_factor, upsampled

    rng = np.random.default_rng(0)
    field = make_field(rng.random((6, 7, 5)), np.diag([3.0, 3.5, 2.5]))
    fine = upsampled(field, 3)
    assert fine.shape == (18, 21, 15)
    np.testing.assert_allclose(fine.values[::3, ::3, ::3], field.values, atol=1e-12)
    pts = np.stack(frac_mesh(fine.shape), -1)
    np.testing.assert_allclose(fine.values, interpolate(field, pts, frac=True, order=3), atol=1e-12)
    assert upsample_factor(field, TopologySettings()) == 10  # 0.5 Å spacing → 0.05 Å
    assert upsample_factor(field, TopologySettings(max_voxels=10_000)) == 3  # 210·27 ≤ 1e4 < 210·64
    assert upsample_factor(field, TopologySettings(upsample=1)) == 1


# ----------------------------------------------------------------------------- summary and CLI
def test_summary_and_cli_json(tmp_path, capsys):
    pytest.importorskip("h5netcdf")
    from elfcore.cli import main
    from elfcore.io import write_field

    field, _, _ = dimer_field()
    summary = topology_summary(field, bonds=True)
    assert summary["phi_bcp"] == pytest.approx(summary["networking_value"], abs=1e-6)
    assert summary["morse_ok"] and not summary["quantized"]
    assert len(summary["basins"]) == 2
    path = tmp_path / "dimers.nc"
    write_field(field, str(path))
    assert main(["netval", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (res,) = out["results"]
    for key in ("networking_value", "molecularity", "percolation", "seconds", "phi_2dec", "phi_bcp"):
        assert key in res
    assert set(res["percolation"]) == {"1", "2", "3"}
    assert res["networking_value"] == pytest.approx(summary["networking_value"], abs=1e-9)
    assert main(["netval", str(path), str(path), "--no-bcp", "--exclude-radius", "0.5"]) == 0
    text = capsys.readouterr().out
    assert text.count("networking value phi") == 2 and "bcp route" not in text
    assert main(["netval", str(tmp_path / "missing.nc")]) == 1
    assert main(["netval", str(path), "--phi-only", "--json"]) == 0
    fast = json.loads(capsys.readouterr().out)["results"][0]
    assert fast["networking_value"] == pytest.approx(res["networking_value"], abs=1e-12)
    assert fast["molecularity"] is None and "phi_bcp" not in fast


# ----------------------------------------------------------------------------- DFT fields
def _dft_cases(per_family: int = 2) -> list[str]:
    """Up to ``per_family`` reference cases per family prefix (cubic_, fluid_, hexagonal_...)."""
    paths = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "assets", "data", "*.nc")))
    picked: dict[str, list[str]] = {}
    for p in paths:
        picked.setdefault(os.path.basename(p).split("_")[0], []).append(p)
    return [p for group in picked.values() for p in group[:per_family]]


DFT_CASES = _dft_cases()


@pytest.mark.skipif(not DFT_CASES, reason="no DFT reference cases in assets/data/*.nc")
@pytest.mark.parametrize("path", DFT_CASES, ids=lambda p: os.path.basename(p))
def test_dft_case_bcp_matches_merge_tree(path):
    from elfcore.io import read_field

    field = read_field(path)
    p = percolation_thresholds(field)
    assert p.values[3] is not None
    cps = critical_points(field)
    assert np.all(cps.bond_attractors >= 0)  # every bond path reaches an attractor
    # no Morse check here: the cases store ELF quantized to 16 bits, and the ELF ≈ 1
    # plateaus then hold many spurious, partly missed critical points
    bg = bond_graph_percolation(cps)
    assert bg.values[3] == pytest.approx(p.values[3], abs=0.01)


# ----------------------------------------------------------------------------- accuracy
def test_phi_metrics_and_case_errors():
    from elfcore.grid import make_case
    from elfcore.topology import case_networking_errors, phi_metrics

    m = phi_metrics([0.5, 0.6, None], [0.52, 0.57, 0.4])
    assert m["n"] == 2 and m["n_missing"] == 1
    assert m["mae"] == pytest.approx(0.025) and m["rmse"] == pytest.approx(np.sqrt((0.02**2 + 0.03**2) / 2))
    from ase import Atoms

    cases = {}
    for i, (fam, amps) in enumerate([("cubic", (1.0, 1.0, 1.0)), ("hexagonal", (0.5, 1.0, 2.0))]):
        ref = cosine_field((12, 12, 12), amps)
        pred = ref.values + 0.1  # a constant shift moves φ by exactly 0.1
        atoms = Atoms(cell=np.asarray(ref.attrs["cell"]), pbc=True)
        cases[f"c{i}"] = make_case(atoms, {"elf_ref": ref.values, "elf_pred": pred}, attrs={"family": fam})
    out = case_networking_errors(cases)
    assert set(out["families"]) == {"cubic", "hexagonal"}
    for fam in ("cubic", "hexagonal"):
        assert out["families"][fam]["mae"] == pytest.approx(0.1, abs=1e-9)


# ----------------------------------------------------------------------------- Quantum ESPRESSO
@pytest.mark.slow
@pytest.mark.skipif(
    not (os.path.exists("/usr/share/espresso/pseudo/H.pz-vbc.UPF") and __import__("shutil").which("pw.x")),
    reason="Quantum ESPRESSO (pw.x, pp.x, H.pz-vbc.UPF) not installed",
)
def test_qe_elf_cubes_coarse_and_fine_agree(tmp_path):
    """4 H₂ in a tetragonal cell, ELF from pp.x on a 28×28×36 and a 48×48×60 FFT grid."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "netval_qe.py")
    out = subprocess.run(
        [sys.executable, script, "--grids", "28", "48", "--workdir", str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=600,
    )
    coarse, fine = json.loads(out.stdout)["rows"]
    assert coarse["grid"] == [28, 28, 36]
    for row in (coarse, fine):
        assert row["phi_bcp"] == pytest.approx(row["phi"], abs=1e-3)
        assert row["morse_sum"] == 0
    assert coarse["phi"] == pytest.approx(fine["phi"], abs=0.01)
    for k in ("1", "2", "3"):
        assert coarse["percolation"][k] == pytest.approx(fine["percolation"][k], abs=0.01)
    assert coarse["phi_2dec"] == fine["phi_2dec"]


# ----------------------------------------------------------------------------- degenerate input
def test_degenerate_grids_and_constant_field():
    one = make_field(np.full((1, 1, 1), 0.3), np.eye(3) * 2.0)
    p = percolation_thresholds(one, TopologySettings(upsample=1))
    assert p.values == {1: 0.3, 2: 0.3, 3: 0.3}  # a single voxel touches all its images
    flat = make_field(np.full((6, 6, 6), 0.5), np.eye(3) * 3.0, [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    mt = merge_tree(flat)
    assert mt.percolation.values[3] == pytest.approx(0.5)
    assert mt.phi_star == pytest.approx(0.5) and mt.molecularity == pytest.approx(0.5)
    assert critical_points(flat).counts == {"max": 0, "bond": 0, "ring": 0, "cage": 0}


# ----------------------------------------------------------------------------- molecularity, brute force
def _components_3x3x3(values, t):
    """Labels of {values ≥ t} on the 3×3×3 supercell (6-connected, not periodic)."""
    from scipy import ndimage

    big = np.tile(values >= t, (3, 3, 3))
    return ndimage.label(big)[0]


def _links(values, t, anchors, molecule_of, partner):
    """(two nuclei in one component, nuclei of different molecules in one component) at t.

    Brute force on the 3×3×3 supercell: the central copy of every nucleus against every
    copy of every nucleus (``partner[i] = (j, T)`` the molecule partner and its cell).
    """
    lab = _components_3x3x3(values, t)
    shape = np.array(values.shape)
    two = inter = False
    cells = [np.array(c) for c in np.ndindex(3, 3, 3)]
    for i, (vi, ki) in enumerate(anchors):
        li = lab[tuple(vi + shape)]
        if li == 0:
            continue
        for j, (vj, kj) in enumerate(anchors):
            for c in cells:
                if j == i and np.all(c == 1):
                    continue
                lj = lab[tuple(vj + c * shape)]
                if lj != li:
                    continue
                two = True
                t_ij = (c - 1) - kj + ki  # cell of j's nucleus copy relative to i's
                # the partner copy of the molecule is the only intramolecular link
                if partner.get(i) != (j, tuple(int(x) for x in t_ij)):
                    inter = True
    return two, inter


def test_molecularity_matches_brute_force_on_random_dimers():
    from elfcore.topology import atom_anchors

    rng = np.random.default_rng(11)
    a = 4.2
    cell = np.eye(3) * a
    centres = []
    while len(centres) < 12:
        c = rng.random(3) * a
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        cand = [c - 0.37 * u, c + 0.37 * u]
        ok = all(np.linalg.norm((p - q) - a * np.rint((p - q) / a)) > 1.25 for p in centres for q in cand)
        if ok:
            centres += cand
    centres = np.mod(np.array(centres), a)
    field = gaussian_field((20, 20, 20), cell, centres, 0.32)
    mt = merge_tree(field, TopologySettings(upsample=1, refine=False))
    assert len(mt.molecules) == 6 and mt.unpaired == []
    assert sorted(sorted(m[:2]) for m in mt.molecules) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    atoms, voxel, shift = atom_anchors(field)
    anchors = [(np.array(np.unravel_index(v, field.shape)), k) for v, k in zip(voxel, shift)]
    partner = {}
    for i, j, t, _ in mt.molecules:
        partner[i] = (j, tuple(t))
        partner[j] = (i, tuple(-x for x in t))
    vals = np.asarray(field.values)
    above = lambda x: float(np.min(vals[vals > x]))  # noqa: E731 - next grid value above x
    assert _links(vals, mt.phi_star, anchors, {}, {})[0]
    assert not _links(vals, above(mt.phi_star), anchors, {}, {})[0]
    assert _links(vals, mt.molecularity, anchors, None, partner)[1]
    assert not _links(vals, above(mt.molecularity), anchors, None, partner)[1]


# --------------------------------------------------------------------------- PL census
def _cosines(n, shift=(0.1, 0.2, 0.3)):
    from elfcore.grid import make_field

    x = np.arange(n) / n * 2 * np.pi
    X, Y, Z = np.meshgrid(x + shift[0], x + shift[1], x + shift[2], indexing="ij")
    return make_field(np.cos(X) + np.cos(Y) + np.cos(Z), np.eye(3) * 4.0)


@pytest.mark.parametrize("n", [12, 17, 24])
def test_pl_census_simple_cubic_cosines(n):
    from elfcore.topology import pl_critical_counts

    # cos x + cos y + cos z: one maximum, three bond (2 neg.) and three ring (1 neg.) saddles, one minimum
    assert pl_critical_counts(_cosines(n)) == {"max": 1, "bond": 3, "ring": 3, "cage": 1, "morse_sum": 0}


def test_pl_census_morse_relation_shift_and_supercell(rng):
    from elfcore.grid import make_field
    from elfcore.topology import pl_critical_counts

    vals = rng.random((10, 12, 14))
    c = pl_critical_counts(make_field(vals, np.diag([3.0, 3.5, 4.0])))
    assert c["morse_sum"] == 0 and c["max"] > 10 and c["bond"] > 0
    # the census only depends on the periodic field: origin shifts keep the counts...
    assert pl_critical_counts(make_field(np.roll(vals, (3, -5, 7), axis=(0, 1, 2)), np.diag([3.0, 3.5, 4.0]))) == c
    # ...and a 2×1×1 supercell doubles them
    big = pl_critical_counts(make_field(np.tile(vals, (2, 1, 1)), np.diag([6.0, 3.5, 4.0])))
    assert {k: big[k] for k in ("max", "bond", "ring", "cage")} == {k: 2 * c[k] for k in ("max", "bond", "ring", "cage")}


def test_pl_census_in_netval_summary():
    from elfcore.topology import topology_summary

    res = topology_summary(_cosines(16), bcp=True)
    assert res["morse_sum"] == 0 and res["critical_points"]["max"] == 1
    assert res["critical_points_all"] == {"max": 1, "bond": 3, "ring": 3, "cage": 1}
