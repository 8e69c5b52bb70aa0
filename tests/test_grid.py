"""Tests of the field data model (elfcore.grid)."""
import numpy as np
import pytest
import xarray as xr
from ase import Atoms

from elfcore import grid
from elfcore.errors import GridError, StructureError

SKEWED = np.array([[4.0, 0.0, 0.0], [1.3, 3.7, 0.0], [0.6, -0.9, 5.1]])


def cosine_field(cell, shape, h=(1, 2, -1), amp=1.0):
    """f(s) = amp*cos(2π h·s) + 0.3*sin(2π s_a): analytic periodic function of fractional s."""
    s = grid.grid_points_frac(shape)
    vals = amp * np.cos(2 * np.pi * s @ np.asarray(h, float)) + 0.3 * np.sin(2 * np.pi * s[:, 0])
    return grid.make_field(vals.reshape(shape), cell)


def cosine_exact(points_cart, cell, h=(1, 2, -1), amp=1.0):
    s = grid.cart_to_frac(points_cart, cell)
    return amp * np.cos(2 * np.pi * s @ np.asarray(h, float)) + 0.3 * np.sin(2 * np.pi * s[..., 0])


def test_make_field_dims_coords_attrs():
    f = grid.make_field(np.zeros((3, 4, 5)), SKEWED, [[0, 0, 0]], [1], name="rho")
    assert f.dims == ("a", "b", "c") and f.name == "rho"
    np.testing.assert_allclose(f.coords["b"].values, np.arange(4) / 4)
    assert f.attrs["cell"].shape == (3, 3)
    assert grid.field_atoms(f).get_chemical_symbols() == ["H"]


@pytest.mark.parametrize(
    "values, cell, err",
    [
        (np.zeros((0, 3, 3)), np.eye(3), GridError),
        (np.zeros((3, 3)), np.eye(3), GridError),
        (np.full((2, 2, 2), np.nan), np.eye(3), GridError),
        (np.zeros((2, 2, 2)), np.zeros((3, 3)), GridError),
        (np.zeros((2, 2, 2)), [[1, 0, 0], [2, 0, 0], [0, 0, 1]], GridError),
        (np.zeros((2, 2, 2)), np.eye(2), GridError),
    ],
)
def test_make_field_rejects_bad_input(values, cell, err):
    with pytest.raises(err):
        grid.make_field(values, cell)


def test_make_field_rejects_mismatched_atoms():
    with pytest.raises(StructureError):
        grid.make_field(np.zeros((2, 2, 2)), np.eye(3), [[0, 0, 0]], [1, 1])


def test_validate_field_detects_duplicated_plane_coords():
    f = grid.make_field(np.zeros((4, 4, 4)), np.eye(3) * 3)
    bad = f.assign_coords(a=np.linspace(0, 1, 4))
    with pytest.raises(GridError, match="duplicated"):
        grid.validate_field(bad)


def test_frac_cart_round_trip_skewed(rng):
    s = rng.random((50, 3)) * 3 - 1
    x = grid.frac_to_cart(s, SKEWED)
    np.testing.assert_allclose(grid.cart_to_frac(x, SKEWED), s, atol=1e-12)
    np.testing.assert_allclose(x, s @ SKEWED)


def test_minimum_image_is_shortest_on_skewed_cell(rng):
    cell = np.array([[3.0, 0, 0], [2.9, 0.8, 0], [0.1, 0.2, 3.0]])  # very skewed
    v = rng.normal(size=(40, 3)) * 4
    mi = grid.minimum_image(v, cell)
    # same lattice coset
    d = grid.cart_to_frac(mi - v, cell)
    np.testing.assert_allclose(d, np.round(d), atol=1e-9)
    # no image within ±2 cells is shorter
    v0 = v - np.round(grid.cart_to_frac(v, cell)) @ cell
    r = range(-6, 7)
    shifts = np.array([[i, j, k] for i in r for j in r for k in r]) @ cell
    best = np.min(np.linalg.norm(v0[:, None, :] + shifts[None], axis=-1), axis=1)
    np.testing.assert_allclose(np.linalg.norm(mi, axis=1), best, atol=1e-9)


def test_interpolate_exact_on_grid_points_and_periodic():
    f = cosine_field(SKEWED, (12, 10, 14))
    pts = grid.grid_points_cart(f)[::37]
    np.testing.assert_allclose(grid.interpolate(f, pts, order=1), f.values.reshape(-1)[::37], atol=1e-12)
    np.testing.assert_allclose(grid.interpolate(f, pts, order=3), f.values.reshape(-1)[::37], atol=1e-9)
    shifted = pts + SKEWED[0] * 2 - SKEWED[2]
    np.testing.assert_allclose(grid.interpolate(f, shifted), grid.interpolate(f, pts), atol=1e-9)


@pytest.mark.parametrize("order, tol", [(1, 3e-2), (3, 2e-3)])
def test_interpolate_analytic_accuracy(rng, order, tol):
    f = cosine_field(SKEWED, (40, 44, 48))
    pts = rng.random((300, 3)) @ SKEWED * 1.7
    err = np.abs(grid.interpolate(f, pts, order=order) - cosine_exact(pts, SKEWED))
    assert err.max() < tol


def test_lattice_slice_picks_nearest_plane():
    f = cosine_field(np.eye(3) * 4, (8, 8, 8))
    sl = grid.lattice_slice(f, "b", 0.37)
    assert sl.dims == ("a", "c")
    np.testing.assert_array_equal(sl.values, f.values[:, 3, :])
    with pytest.raises(ValueError):
        grid.lattice_slice(f, "x", 0.1)


def test_plane_slice_matches_analytic_on_skewed_cell():
    f = cosine_field(SKEWED, (40, 44, 48))
    sl = grid.plane_slice(f, normal=[0.2, -0.4, 1.0], offset=1.1, size=6.0, resolution=0.3)
    o, u, v = (np.asarray(sl.attrs[k]) for k in ("origin", "u_axis", "v_axis"))
    n = np.asarray(sl.attrs["normal"])
    assert abs(o @ n - 1.1) < 1e-9 and abs(u @ n) < 1e-12 and abs(v @ n) < 1e-12
    uu, vv = np.meshgrid(sl.u.values, sl.v.values, indexing="ij")
    pts = o + uu[..., None] * u + vv[..., None] * v
    np.testing.assert_allclose(sl.values, cosine_exact(pts, SKEWED), atol=2e-3)


def test_plane_slice_through_three_atoms_contains_them():
    cell = SKEWED
    pos = np.array([[0.5, 0.5, 0.5], [3.9, 1.0, 0.7], [1.0, 3.5, 4.8]])
    f = grid.make_field(cosine_field(cell, (20, 20, 20)).values, cell, pos, [1, 1, 1])
    sl = grid.plane_slice(f, atoms=(0, 1, 2), resolution=0.2)
    n, o = np.asarray(sl.attrs["normal"]), np.asarray(sl.attrs["origin"])
    for p in pos:
        # each atom (nearest image to atom 0) lies in the plane
        q = pos[0] + grid.minimum_image(p - pos[0], cell)
        assert abs((q - o) @ n) < 1e-9
    with pytest.raises(GridError, match="collinear"):
        g = grid.make_field(f.values, cell, [[0, 0, 0], [1, 0, 0], [2, 0, 0]], [1, 1, 1])
        grid.plane_slice(g, atoms=(0, 1, 2))
    with pytest.raises(StructureError):
        grid.plane_slice(f, atoms=(0, 1, 7))


def test_line_profile_between_atoms_uses_minimum_image():
    cell = np.eye(3) * 6.0
    pos = np.array([[0.3, 3.0, 3.0], [5.7, 3.0, 3.0]])  # 0.6 Å apart through the boundary
    f = cosine_field(cell, (48, 48, 48), h=(1, 0, 0))
    f = grid.make_field(f.values, cell, pos, [1, 1])
    line = grid.line_profile(f, atoms=(0, 1), n=31)
    assert line.dims == ("s",)
    assert line.s.values[-1] == pytest.approx(0.6)
    pts = np.asarray(line.attrs["start"]) + np.outer(line.s.values / 0.6, np.asarray(line.attrs["end"]) - line.attrs["start"])
    np.testing.assert_allclose(line.values, cosine_exact(pts, cell, h=(1, 0, 0)), atol=1e-3)
    long = grid.line_profile(f, atoms=(0, 1), n=31, minimum_image_path=False)
    assert long.s.values[-1] == pytest.approx(5.4)


def test_case_round_trip_through_fields():
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=SKEWED, pbc=True)
    elf = np.random.default_rng(1).random((4, 5, 6))
    ds = grid.make_case(atoms, {"elf_ref": elf, "rho_ref": elf * 2}, attrs={"pressure_gpa": 76.0})
    assert isinstance(ds, xr.Dataset)
    f = grid.case_field(ds, "elf_ref")
    np.testing.assert_array_equal(f.values, elf)
    assert f.attrs["pressure_gpa"] == 76.0
    np.testing.assert_allclose(grid.field_atoms(f).get_positions(), atoms.get_positions())
    with pytest.raises(GridError, match="no field"):
        grid.case_field(ds, "elf_pred")
    with pytest.raises(GridError, match="shape"):
        grid.make_case(atoms, {"elf_ref": elf, "rho_ref": elf[:2]})


def test_voxel_volume_and_spacing():
    f = grid.make_field(np.zeros((10, 20, 40)), SKEWED)
    assert grid.voxel_volume(f) * 8000 == pytest.approx(abs(np.linalg.det(SKEWED)))
    np.testing.assert_allclose(grid.grid_spacing(f), np.linalg.norm(SKEWED, axis=1) / [10, 20, 40])


def test_nearest_atom_matches_brute_force_over_images(rng):
    pos = rng.random((9, 3)) @ SKEWED
    shifts = np.array([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)], float) @ SKEWED
    for i in range(len(pos)):
        d = np.linalg.norm(pos[:, None, :] + shifts[None] - pos[i], axis=2).min(axis=1)
        d[i] = np.inf
        assert grid.nearest_atom(pos, SKEWED, i) == int(np.argmin(d))
    with pytest.raises(StructureError, match="two atoms"):
        grid.nearest_atom(pos[:1], SKEWED, 0)


@pytest.mark.parametrize("axis", ["a", "b", "c"])
def test_lattice_slice_geometry_places_grid_points(axis):
    f = cosine_field(SKEWED, (6, 7, 8))
    s = grid.lattice_slice(f, axis, 0.4)
    g = grid.slice_geometry(s)
    assert g.x.shape == (s.shape[0],) and g.y.shape == (s.shape[1],)
    other = [d for d in "abc" if d != axis]
    for i, j in ((0, 0), (2, 3), (s.shape[0] - 1, 1)):
        frac = np.zeros(3)
        frac["abc".index(axis)] = s.attrs["slice_position"]
        frac["abc".index(other[0])] = float(s.coords[other[0]][i])
        frac["abc".index(other[1])] = float(s.coords[other[1]][j])
        point = g.origin + g.x[i] * g.axes[0] + g.y[j] * g.axes[1]
        np.testing.assert_allclose(point, frac @ SKEWED, atol=1e-12)


def test_plane_slice_geometry_places_interpolated_values():
    f = cosine_field(SKEWED, (24, 24, 24))
    s = grid.plane_slice(f, normal=[0.3, -0.2, 1.0], offset=1.1, resolution=0.4, order=1)
    g = grid.slice_geometry(s)
    pts = g.origin + g.x[:, None, None] * g.axes[0] + g.y[None, :, None] * g.axes[1]
    np.testing.assert_allclose(grid.interpolate(f, pts, order=1), s.values, atol=1e-10)


def test_slice_atoms_lattice_plane_distance_and_wrap():
    cell = np.diag([4.0, 5.0, 6.0])
    pos = np.array([[1.0, 2.0, 0.3], [3.9, 6.0, 5.8], [2.0, 2.0, 3.0], [0.5, 0.5, 0.6]])
    f = grid.make_field(np.zeros((4, 5, 6)), cell, pos)
    xy, index = grid.slice_atoms(grid.lattice_slice(f, "c", 0.0), 0.5)
    assert index.tolist() == [0, 1]  # 0.3 Å above, and 0.2 Å below through the periodic boundary
    np.testing.assert_allclose(xy, [[1.0, 2.0], [3.9, 1.0]])  # b wrapped into the cell
    empty = grid.make_field(np.zeros((4, 5, 6)), cell)
    xy, index = grid.slice_atoms(grid.lattice_slice(empty, "c", 0.0), 0.5)
    assert xy.shape == (0, 2) and index.shape == (0,)


def test_slice_atoms_plane_finds_periodic_images():
    cell = np.eye(3) * 4.0
    f = grid.make_field(np.zeros((8, 8, 8)), cell, [[0.0, 0.0, 0.1], [2.0, 2.0, 2.0]])
    s = grid.plane_slice(f, normal=[0, 0, 1], offset=0.0, size=6.0, resolution=0.5)
    xy, index = grid.slice_atoms(s, 0.3)
    assert set(index.tolist()) == {0}
    # the slice's window (side 6 Å, centred mid-cell) holds the images at x, y ∈ {0, 4}
    g = grid.slice_geometry(s)
    points = g.origin + xy[:, :1] * g.axes[0] + xy[:, 1:] * g.axes[1]
    np.testing.assert_allclose(points[:, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(sorted(map(tuple, points[:, :2])), [(0, 0), (0, 4), (4, 0), (4, 4)], atol=1e-12)
    with pytest.raises(GridError, match="not a slice"):
        grid.slice_atoms(f.isel(c=0), 0.3)
