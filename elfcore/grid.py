"""The field data model of elfcore (see ``docs/datamodel.md``).

A *field* is an :class:`xarray.DataArray` with dims ``("a", "b", "c")`` over the
fractional grid coordinates ``i/N`` (no duplicated periodic plane). Its attrs hold

``cell``
    (3, 3) float64, rows are the lattice vectors in Å.
``positions``
    (n_atoms, 3) float64 Cartesian atom positions in Å (may be empty).
``numbers``
    (n_atoms,) int64 atomic numbers.

A *case* is an :class:`xarray.Dataset` with one or more fields (``elf_ref``,
``rho_ref``, ``elf_pred``, ``elf_corr``...) over the same grid plus the
structure as data variables ``cell (vec, xyz)``, ``positions (atom, xyz)`` and
``numbers (atom)``, so a single netCDF file holds everything.

All functions take and return these objects; Cartesian positions are always
derived from the cell, so triclinic cells work everywhere.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np
import xarray as xr

from .errors import GridError, SettingsError, StructureError

__all__ = [
    "make_field",
    "validate_field",
    "field_from_atoms",
    "field_cell",
    "field_atoms",
    "make_case",
    "validate_case",
    "case_field",
    "case_atoms",
    "frac_to_cart",
    "cart_to_frac",
    "grid_points_frac",
    "grid_points_cart",
    "voxel_volume",
    "grid_spacing",
    "minimum_image",
    "nearest_atom",
    "interpolate",
    "lattice_slice",
    "plane_slice",
    "SliceGeometry",
    "slice_geometry",
    "slice_atoms",
    "line_profile",
]

DIMS = ("a", "b", "c")


# --------------------------------------------------------------------------- construction
def _check_cell(cell) -> np.ndarray:
    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3):
        raise GridError(f"cell has shape {cell.shape}; expected (3, 3) lattice vectors in Å")
    if not np.all(np.isfinite(cell)):
        raise GridError("cell contains NaN or inf")
    vol = float(np.linalg.det(cell))
    if abs(vol) < 1e-8:
        raise GridError(f"cell has zero volume (det = {vol:.3g} Å³)")
    return cell


def make_field(
    values,
    cell,
    positions=None,
    numbers=None,
    *,
    name: str = "elf",
    attrs: Mapping | None = None,
) -> xr.DataArray:
    """Build a validated periodic field.

    Parameters
    ----------
    values : array_like, shape (Na, Nb, Nc)
        Field values on the grid point ``(i/Na, j/Nb, k/Nc)`` (fractional), no
        duplicated boundary plane. float32 and float64 are kept, other dtypes
        become float64.
    cell : array_like, shape (3, 3)
        Lattice vectors as rows, Å.
    positions : array_like, shape (n, 3), optional
        Cartesian atom positions, Å.
    numbers : array_like of int, shape (n,), optional
        Atomic numbers (default: hydrogen for every position).
    name : str
        Field name (``"elf"``, ``"rho"``, ``"residual"``...).
    attrs : mapping, optional
        Extra metadata (scalars/strings) copied into ``attrs``.

    Returns
    -------
    xarray.DataArray
        dims ``("a", "b", "c")``, coords ``a = i/Na`` etc.

    Raises
    ------
    GridError
        On wrong dimensionality, zero-size grid, zero-volume cell or NaN/inf values.

    Examples
    --------
    >>> f = make_field(np.zeros((2, 3, 4)), np.eye(3) * 5.0)
    >>> f.dims, f.shape
    (('a', 'b', 'c'), (2, 3, 4))
    """
    arr = np.asarray(values)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.ndim != 3:
        raise GridError(f"field values have {arr.ndim} dimensions; expected 3 (a, b, c)")
    if min(arr.shape) < 1:
        raise GridError(f"grid of zero size: shape {arr.shape}")
    cell = _check_cell(cell)
    if positions is None:
        positions = np.zeros((0, 3))
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if numbers is None:
        numbers = np.ones(len(positions), dtype=np.int64)
    numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
    if len(numbers) != len(positions):
        raise StructureError(f"{len(numbers)} atomic numbers for {len(positions)} positions")
    all_attrs = dict(attrs or {})
    all_attrs.update(cell=cell, positions=positions, numbers=numbers)
    coords = {d: np.arange(n) / n for d, n in zip(DIMS, arr.shape)}
    field = xr.DataArray(arr, dims=DIMS, coords=coords, name=name, attrs=all_attrs)
    return validate_field(field)


def validate_field(field: xr.DataArray) -> xr.DataArray:
    """Check that ``field`` follows the data model; return it unchanged.

    Raises
    ------
    GridError
        If dims, coords, cell or values are not valid.
    """
    if not isinstance(field, xr.DataArray):
        raise GridError(f"expected an xarray.DataArray field, got {type(field).__name__}")
    if tuple(field.dims) != DIMS:
        raise GridError(f"field dims are {tuple(field.dims)}; expected {DIMS}")
    if min(field.shape) < 1:
        raise GridError(f"grid of zero size: shape {field.shape}")
    if "cell" not in field.attrs:
        raise GridError("field has no 'cell' attribute")
    _check_cell(field.attrs["cell"])
    for d, n in zip(DIMS, field.shape):
        if d in field.coords:
            c = np.asarray(field.coords[d])
            if not np.allclose(c, np.arange(n) / n, atol=1e-9):
                raise GridError(f"coordinate {d!r} is not i/N (duplicated periodic plane?)")
    if not np.all(np.isfinite(field.values)):
        raise GridError("field contains NaN or inf values")
    return field


def field_from_atoms(values, atoms, *, name: str = "elf", attrs: Mapping | None = None) -> xr.DataArray:
    """Build a field on the cell of an :class:`ase.Atoms`, carrying its atoms."""
    return make_field(
        values,
        np.asarray(atoms.cell[:]),
        atoms.get_positions(),
        atoms.get_atomic_numbers(),
        name=name,
        attrs=attrs,
    )


def field_cell(field: xr.DataArray | xr.Dataset) -> np.ndarray:
    """Return the (3, 3) cell in Å of a field or case."""
    if isinstance(field, xr.Dataset):
        return np.asarray(field["cell"].values, dtype=np.float64)
    return np.asarray(field.attrs["cell"], dtype=np.float64)


def field_atoms(field: xr.DataArray):
    """Return the structure of a field as a periodic :class:`ase.Atoms`."""
    from ase import Atoms

    return Atoms(
        numbers=np.asarray(field.attrs.get("numbers", np.zeros(0, int)), dtype=int),
        positions=np.asarray(field.attrs.get("positions", np.zeros((0, 3)))).reshape(-1, 3),
        cell=field_cell(field),
        pbc=True,
    )


def make_case(atoms, fields: Mapping[str, object], *, attrs: Mapping | None = None) -> xr.Dataset:
    """Bundle fields over one grid with their structure into a case Dataset.

    Parameters
    ----------
    atoms : ase.Atoms
        The periodic structure.
    fields : mapping of str to DataArray or array (Na, Nb, Nc)
        e.g. ``{"elf_ref": ..., "rho_ref": ...}``; all must share the grid shape.
    attrs : mapping, optional
        Case metadata (code, version, settings, pressure_gpa, temperature_k, md_step...).
    """
    cell = _check_cell(np.asarray(atoms.cell[:]))
    data_vars = {
        "cell": (("vec", "xyz"), cell),
        "positions": (("atom", "xyz"), np.asarray(atoms.get_positions(), dtype=np.float64).reshape(-1, 3)),
        "numbers": (("atom",), np.asarray(atoms.get_atomic_numbers(), dtype=np.int64)),
    }
    shape = None
    for key, value in fields.items():
        arr = np.asarray(value.values if isinstance(value, xr.DataArray) else value)
        if shape is None:
            shape = arr.shape
        if arr.shape != shape:
            raise GridError(f"field {key!r} has shape {arr.shape}; other fields have {shape}")
        if arr.ndim != 3:
            raise GridError(f"field {key!r} has {arr.ndim} dims; expected 3")
        data_vars[key] = (DIMS, arr)
    coords = {}
    if shape is not None:
        coords = {d: np.arange(n) / n for d, n in zip(DIMS, shape)}
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(attrs or {}))
    return validate_case(ds)


def validate_case(ds: xr.Dataset) -> xr.Dataset:
    """Check that a case Dataset follows the data model; return it unchanged."""
    if not isinstance(ds, xr.Dataset):
        raise GridError(f"expected an xarray.Dataset case, got {type(ds).__name__}")
    for key in ("cell", "positions", "numbers"):
        if key not in ds:
            raise GridError(f"case has no {key!r} variable")
    _check_cell(ds["cell"].values)
    for key, var in ds.data_vars.items():
        if var.dims == DIMS and not np.all(np.isfinite(var.values)):
            raise GridError(f"case field {key!r} contains NaN or inf")
    return ds


def case_atoms(ds: xr.Dataset):
    """Return the structure of a case as :class:`ase.Atoms`."""
    from ase import Atoms

    return Atoms(
        numbers=np.asarray(ds["numbers"].values, dtype=int),
        positions=np.asarray(ds["positions"].values, dtype=np.float64).reshape(-1, 3),
        cell=field_cell(ds),
        pbc=True,
    )


def case_field(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Extract one field of a case as a stand-alone field carrying cell and atoms."""
    if name not in ds or ds[name].dims != DIMS:
        have = [k for k, v in ds.data_vars.items() if v.dims == DIMS]
        raise GridError(f"case has no field {name!r}; fields present: {have}")
    atoms = case_atoms(ds)
    extra = {k: v for k, v in ds.attrs.items()}
    return field_from_atoms(ds[name].values, atoms, name=name, attrs=extra)


# --------------------------------------------------------------------------- geometry
def frac_to_cart(points_frac, cell) -> np.ndarray:
    """Fractional (..., 3) → Cartesian (..., 3) in Å: ``x = s @ cell``."""
    return np.asarray(points_frac, dtype=np.float64) @ _check_cell(cell)


def cart_to_frac(points_cart, cell) -> np.ndarray:
    """Cartesian (..., 3) in Å → fractional (..., 3): ``s = x @ inv(cell)``."""
    return np.asarray(points_cart, dtype=np.float64) @ np.linalg.inv(_check_cell(cell))


def grid_points_frac(shape: Sequence[int]) -> np.ndarray:
    """Fractional coordinates (Na*Nb*Nc, 3) of all grid points, C order (c fastest)."""
    axes = [np.arange(n) / n for n in shape]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def grid_points_cart(field: xr.DataArray) -> np.ndarray:
    """Cartesian coordinates (N, 3) in Å of all grid points of ``field``, C order."""
    return frac_to_cart(grid_points_frac(field.shape), field_cell(field))


def voxel_volume(field: xr.DataArray) -> float:
    """Volume of one voxel in Å³."""
    return abs(float(np.linalg.det(field_cell(field)))) / float(np.prod(field.shape))


def grid_spacing(field: xr.DataArray) -> np.ndarray:
    """Spacing along a, b, c in Å (length of lattice vector / N)."""
    return np.linalg.norm(field_cell(field), axis=1) / np.asarray(field.shape)


def minimum_image(vectors_cart, cell) -> np.ndarray:
    """Shortest periodic image of Cartesian difference vectors (..., 3), any triclinic cell.

    Uses ase's Minkowski-reduced search (:func:`ase.geometry.find_mic`), which is exact
    for strongly skewed cells where rounding fractional coordinates is not enough.
    """
    from ase.geometry import find_mic

    cell = _check_cell(cell)
    v = np.asarray(vectors_cart, dtype=np.float64)
    mic, _ = find_mic(v.reshape(-1, 3), cell, pbc=True)
    return mic.reshape(v.shape)


def nearest_atom(positions_cart, cell, index: int) -> int:
    """Index of the atom nearest to atom ``index`` (minimum image; the lowest index on a tie).

    Parameters
    ----------
    positions_cart : array (n_atoms, 3)
        Cartesian positions, Å (n_atoms ≥ 2).
    cell : array (3, 3)
        Lattice vectors as rows, Å.
    index : int
        The atom whose neighbour is wanted.

    Examples
    --------
    >>> nearest_atom([[0.0, 0.0, 0.0], [0.7, 0.0, 0.0], [2.5, 0.0, 0.0]], np.eye(3) * 3.0, 2)
    0
    """
    pos = np.asarray(positions_cart, dtype=np.float64).reshape(-1, 3)
    if len(pos) < 2:
        raise StructureError(f"a nearest neighbour needs at least two atoms, got {len(pos)}")
    if not 0 <= int(index) < len(pos):
        raise StructureError(f"atom index {index} out of range ({len(pos)} atoms)")
    d = np.linalg.norm(minimum_image(pos - pos[int(index)], cell), axis=1)
    d[int(index)] = np.inf
    return int(np.argmin(d))


def interpolate(field: xr.DataArray, points_cart, *, order: int = 3, frac: bool = False) -> np.ndarray:
    """Sample a periodic field at arbitrary points.

    Parameters
    ----------
    field : xarray.DataArray
        A validated field.
    points_cart : array_like, shape (..., 3)
        Cartesian points in Å (or fractional with ``frac=True``); any image.
    order : int
        1 = trilinear, 3 = periodic cubic B-spline (exact for smooth fields to
        interpolation accuracy).

    Returns
    -------
    numpy.ndarray, shape (...)
    """
    from scipy import ndimage

    if order not in (0, 1, 3):
        raise SettingsError(f"order={order}; must be 0, 1 or 3")
    pts = np.asarray(points_cart, dtype=np.float64)
    if pts.shape[-1] != 3:
        raise GridError(f"points have last dimension {pts.shape[-1]}; expected 3")
    s = pts if frac else cart_to_frac(pts, field_cell(field))
    shape = np.asarray(field.shape)
    idx = (np.mod(s, 1.0) * shape).reshape(-1, 3).T
    values = np.asarray(field.values, dtype=np.float64)
    out = ndimage.map_coordinates(values, idx, order=order, mode="grid-wrap", prefilter=order > 1)
    return out.reshape(pts.shape[:-1])


# --------------------------------------------------------------------------- cuts
def lattice_slice(field: xr.DataArray, axis: str = "c", position: float = 0.0) -> xr.DataArray:
    """Grid plane perpendicular to lattice axis ``axis`` at fractional ``position`` (nearest plane).

    No interpolation: returns the 2D DataArray over the two other fractional dims.
    """
    if axis not in DIMS:
        raise SettingsError(f"axis={axis!r}; must be one of {DIMS}")
    n = field.sizes[axis]
    i = int(np.round((position % 1.0) * n)) % n
    out = field.isel({axis: i})
    out.attrs = dict(field.attrs, slice_axis=axis, slice_index=i, slice_position=i / n)
    return out


def _plane_from_atoms(field: xr.DataArray, atoms: Sequence[int]):
    pos = np.asarray(field.attrs.get("positions", np.zeros((0, 3)))).reshape(-1, 3)
    if len(atoms) != 3:
        raise SettingsError(f"need three atom indices for a plane, got {len(atoms)}")
    for i in atoms:
        if not 0 <= int(i) < len(pos):
            raise StructureError(f"atom index {i} out of range (field has {len(pos)} atoms)")
    cell = field_cell(field)
    p0 = pos[atoms[0]]
    p1 = p0 + minimum_image(pos[atoms[1]] - p0, cell)
    p2 = p0 + minimum_image(pos[atoms[2]] - p0, cell)
    normal = np.cross(p1 - p0, p2 - p0)
    if np.linalg.norm(normal) < 1e-8:
        raise GridError(f"atoms {tuple(atoms)} are collinear; they define no plane")
    u = (p1 - p0) / np.linalg.norm(p1 - p0)
    return p0, normal / np.linalg.norm(normal), u


def plane_slice(
    field: xr.DataArray,
    *,
    normal=None,
    offset: float = 0.0,
    atoms: Sequence[int] | None = None,
    size: float | None = None,
    resolution: float = 0.05,
    order: int = 3,
) -> xr.DataArray:
    """Cut a 2D slice through any plane of a periodic field.

    The plane is either ``{x : n·x = offset}`` (``normal`` Cartesian, normalized
    here, ``offset`` in Å) or the plane through three atoms (``atoms`` indices,
    minimum-image aware). The slice is a square of side ``size`` Å (default: the
    longest cell vector) centred on the plane's origin point, sampled every
    ``resolution`` Å with periodic interpolation.

    Returns
    -------
    xarray.DataArray
        dims ``("u", "v")`` with coords in Å; attrs ``origin``, ``u_axis``,
        ``v_axis``, ``normal`` (Cartesian) plus the field's attrs.
    """
    cell = field_cell(field)
    if atoms is not None:
        p0, n, u = _plane_from_atoms(field, atoms)
        # centre the window on the centroid of the three atoms
        pos = np.asarray(field.attrs["positions"]).reshape(-1, 3)
        pts = [p0] + [p0 + minimum_image(pos[a] - p0, cell) for a in atoms[1:]]
        centre = np.mean(pts, axis=0)
    else:
        if normal is None:
            raise SettingsError("give either normal (and offset) or atoms")
        n = np.asarray(normal, dtype=np.float64)
        if n.shape != (3,) or np.linalg.norm(n) < 1e-12:
            raise SettingsError(f"normal={normal!r}; expected a non-zero 3-vector")
        n = n / np.linalg.norm(n)
        centre = 0.5 * cell.sum(axis=0)
        centre = centre + (offset - centre @ n) * n
        helper = np.eye(3)[np.argmin(np.abs(n))]
        u = np.cross(n, helper)
        u /= np.linalg.norm(u)
    v = np.cross(n, u)
    if size is None:
        size = float(np.max(np.linalg.norm(cell, axis=1)))
    if resolution <= 0 or size <= 0:
        raise SettingsError(f"size={size}, resolution={resolution}; both must be > 0")
    m = max(2, int(np.ceil(size / resolution)) + 1)
    t = np.linspace(-size / 2, size / 2, m)
    uu, vv = np.meshgrid(t, t, indexing="ij")
    pts = centre + uu[..., None] * u + vv[..., None] * v
    vals = interpolate(field, pts, order=order)
    attrs = dict(field.attrs, origin=centre, u_axis=u, v_axis=v, normal=n)
    return xr.DataArray(vals, dims=("u", "v"), coords={"u": t, "v": t}, name=field.name, attrs=attrs)


class SliceGeometry(NamedTuple):
    """Where a 2D slice lies in space (:func:`slice_geometry`).

    ``x`` (nx,) and ``y`` (ny,) are the in-plane coordinates in Å of the slice's two
    axes; the point drawn at ``(x, y)`` is ``origin + x * axes[0] + y * axes[1]``
    (Cartesian, Å). ``axes`` (2, 3) are unit vectors, orthogonal for a
    :func:`plane_slice`, along the two other lattice vectors for a :func:`lattice_slice`
    (not orthogonal in a skewed cell).
    """

    x: np.ndarray
    y: np.ndarray
    origin: np.ndarray
    axes: np.ndarray


def _lattice_slice_axes(slice2d: xr.DataArray) -> tuple[int, list[int]]:
    axis = slice2d.attrs["slice_axis"]
    return DIMS.index(axis), [DIMS.index(d) for d in DIMS if d != axis]


def _slice_kind(slice2d: xr.DataArray) -> str:
    if "slice_axis" in slice2d.attrs:
        return "lattice"
    if all(k in slice2d.attrs for k in ("origin", "u_axis", "v_axis", "normal")):
        return "plane"
    raise GridError("not a slice: expected the attrs of lattice_slice or plane_slice")


def slice_geometry(slice2d: xr.DataArray) -> SliceGeometry:
    """In-plane coordinates (Å) and placement in space of a :func:`lattice_slice` or :func:`plane_slice`.

    A lattice slice perpendicular to ``a`` has coordinates ``b``, ``c`` scaled to Å
    (fractional coordinate × |b|, × |c|) with its origin at ``position × a``; a plane
    slice keeps its ``u``, ``v`` coordinates, origin and axes.

    Examples
    --------
    >>> f = make_field(np.zeros((2, 4, 5)), np.diag([2.0, 4.0, 5.0]))
    >>> g = slice_geometry(lattice_slice(f, "a", 0.5))
    >>> g.x.tolist(), g.origin.tolist(), g.axes.tolist()
    ([0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.0], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    """
    if _slice_kind(slice2d) == "plane":
        origin, u, v = (np.asarray(slice2d.attrs[k], dtype=np.float64) for k in ("origin", "u_axis", "v_axis"))
        return SliceGeometry(np.asarray(slice2d.coords["u"]), np.asarray(slice2d.coords["v"]), origin, np.stack([u, v]))
    cell = _check_cell(slice2d.attrs["cell"])
    ia, io = _lattice_slice_axes(slice2d)
    lengths = np.linalg.norm(cell[io], axis=1)
    x = np.asarray(slice2d.coords[DIMS[io[0]]]) * lengths[0]
    y = np.asarray(slice2d.coords[DIMS[io[1]]]) * lengths[1]
    origin = float(slice2d.attrs["slice_position"]) * cell[ia]
    return SliceGeometry(x, y, origin, cell[io] / lengths[:, None])


def slice_atoms(slice2d: xr.DataArray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """The atoms within ``max_distance`` Å of a slice, in the slice's in-plane coordinates (Å).

    For a :func:`lattice_slice` the distance is measured between lattice planes
    (periodic) and each atom appears once, at its fractional coordinates wrapped into
    the cell. For a :func:`plane_slice` every periodic image in the 27 nearest cells
    is tried, and the images inside the slice's square window are returned (an atom
    may appear more than once).

    Parameters
    ----------
    slice2d : xarray.DataArray
        Output of :func:`lattice_slice` or :func:`plane_slice` (carries the structure).
    max_distance : float
        Largest distance from the plane, Å.

    Returns
    -------
    xy : numpy.ndarray (m, 2)
        In-plane coordinates, Å, as in :func:`slice_geometry`.
    index : numpy.ndarray (m,) of int
        The atom of each row.

    Examples
    --------
    >>> f = make_field(np.zeros((4, 4, 4)), np.eye(3) * 4.0, positions=[[1.0, 2.0, 0.2], [1.0, 2.0, 2.0]])
    >>> xy, index = slice_atoms(lattice_slice(f, "c", 0.0), 0.5)
    >>> xy.tolist(), index.tolist()
    ([[1.0, 2.0]], [0])
    """
    kind = _slice_kind(slice2d)
    pos = np.asarray(slice2d.attrs.get("positions", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    cell = _check_cell(slice2d.attrs["cell"])
    if len(pos) == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=int)
    if kind == "lattice":
        ia, io = _lattice_slice_axes(slice2d)
        inv = np.linalg.inv(cell)
        frac = (pos @ inv) % 1.0
        plane_spacing = 1.0 / np.linalg.norm(inv[:, ia])  # Å between lattice planes one unit apart
        dist = np.abs(((frac[:, ia] - float(slice2d.attrs["slice_position"]) + 0.5) % 1.0) - 0.5) * plane_spacing
        index = np.nonzero(dist <= max_distance)[0]
        lengths = np.linalg.norm(cell[io], axis=1)
        return (frac[index][:, io] * lengths).reshape(-1, 2), index
    origin, u, v, n = (np.asarray(slice2d.attrs[k], dtype=np.float64) for k in ("origin", "u_axis", "v_axis", "normal"))
    half_u = float(np.max(np.abs(slice2d.coords["u"])))
    half_v = float(np.max(np.abs(slice2d.coords["v"])))
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float) @ cell
    images = pos[:, None, :] + shifts[None, :, :] - origin  # (n_atoms, 27, 3)
    du, dv, dn = images @ u, images @ v, images @ n
    ok = (np.abs(dn) <= max_distance) & (np.abs(du) <= half_u) & (np.abs(dv) <= half_v)
    index, image = np.nonzero(ok)
    return np.stack([du[index, image], dv[index, image]], axis=1), index


def line_profile(
    field: xr.DataArray,
    start=None,
    end=None,
    *,
    atoms: Sequence[int] | None = None,
    n: int = 200,
    minimum_image_path: bool = True,
    order: int = 3,
) -> xr.DataArray:
    """Sample a field along a straight line.

    Parameters
    ----------
    start, end : array_like (3,), optional
        Cartesian end points in Å.
    atoms : pair of int, optional
        Instead of points: the line from atom ``atoms[0]`` to atom ``atoms[1]``.
    n : int
        Number of samples (≥ 2).
    minimum_image_path : bool
        Go to the nearest periodic image of ``end`` (default), as a user expects
        for "the bond between two atoms".

    Returns
    -------
    xarray.DataArray
        dim ``"s"`` = distance from start in Å; attrs ``start``, ``end`` (Cartesian).
    """
    if n < 2:
        raise SettingsError(f"n={n}; must be ≥ 2")
    cell = field_cell(field)
    if atoms is not None:
        pos = np.asarray(field.attrs.get("positions", np.zeros((0, 3)))).reshape(-1, 3)
        if len(atoms) != 2:
            raise SettingsError(f"need two atom indices for a line, got {len(atoms)}")
        for i in atoms:
            if not 0 <= int(i) < len(pos):
                raise StructureError(f"atom index {i} out of range (field has {len(pos)} atoms)")
        start, end = pos[atoms[0]], pos[atoms[1]]
    if start is None or end is None:
        raise SettingsError("give start and end points, or two atom indices")
    start = np.asarray(start, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    if minimum_image_path:
        end = start + minimum_image(end - start, cell)
    t = np.linspace(0.0, 1.0, n)
    pts = start + t[:, None] * (end - start)
    vals = interpolate(field, pts, order=order)
    s = t * float(np.linalg.norm(end - start))
    attrs = dict(field.attrs, start=start, end=end)
    return xr.DataArray(vals, dims=("s",), coords={"s": s}, name=field.name, attrs=attrs)
