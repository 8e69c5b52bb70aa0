"""Gaussian cube: round trips, CP2K and Quantum ESPRESSO flavours, duplicated planes, errors."""
import io
from pathlib import Path

import numpy as np
import pytest
from ase.units import Bohr

from elfcore.errors import ElfcoreError, FormatError
from elfcore.io import read_field, write_field
from elfcore.io.cube import read_cube

from .conftest import SKEWED_CELL


def _cube_text(values, cell, positions, numbers, *, title, comment, charge, origin=(0.0, 0.0, 0.0),
               voxel_counts=None):
    """A cube file the way CP2K/QE write it: (I5,3F12.6) header, (6E13.5) per z-row, Bohr."""
    shape = values.shape
    counts = voxel_counts or shape
    lines = [title, comment, "%5d%12.6f%12.6f%12.6f" % (len(numbers), *(np.asarray(origin) / Bohr))]
    for ax in range(3):
        lines.append("%5d%12.6f%12.6f%12.6f" % (shape[ax], *(cell[ax] / counts[ax] / Bohr)))
    for z, p in zip(numbers, positions):
        lines.append("%5d%12.6f%12.6f%12.6f%12.6f" % (z, charge(z), *(p / Bohr)))
    text = "\n".join(lines) + "\n"
    rows = []
    for row in values.reshape(-1, shape[2]):
        for start in range(0, len(row), 6):
            rows.append("".join("%13.5E" % v for v in row[start : start + 6]))
    return text + "\n".join(rows) + "\n"


def _read_text(text, **kw):
    return read_field(io.StringIO(text), format="cube", **kw)


def test_round_trip_elf(tmp_path, elf_field):
    path = tmp_path / "elf.cube"
    write_field(elf_field, path)
    out = read_field(path)
    assert out.name == "elf" and out.shape == elf_field.shape
    np.testing.assert_allclose(out.values, elf_field.values, rtol=6e-6, atol=1e-12)
    np.testing.assert_allclose(out.attrs["cell"], SKEWED_CELL, atol=1e-7)
    np.testing.assert_allclose(out.attrs["positions"], elf_field.attrs["positions"], atol=1e-7)
    np.testing.assert_array_equal(out.attrs["numbers"], [1, 1, 3])
    assert "duplicate_plane_dropped" not in out.attrs


def test_density_is_bohr_in_file_and_angstrom_inside(tmp_path, rho_field):
    path = tmp_path / "rho.cube"
    write_field(rho_field, path)
    lines = path.read_text().splitlines()
    first = float(lines[6 + 2].split()[0])
    assert first == pytest.approx(rho_field.values[0, 0, 0] * Bohr**3, rel=1e-5)
    out = read_field(path)
    assert out.name == "rho"
    np.testing.assert_allclose(out.values, rho_field.values, rtol=6e-6)


def test_cp2k_flavour(elf_field):
    # CP2K: "-Quickstep-" title, 0.0 in the charge column, 6 values per line per z-row
    values = elf_field.values
    text = _cube_text(values, SKEWED_CELL, elf_field.attrs["positions"], [1, 1, 3],
                      title="-Quickstep-", comment=" ELF ALPHA SPIN", charge=lambda z: 0.0)
    out = _read_text(text)
    assert out.name == "elf"
    np.testing.assert_allclose(out.values, values, rtol=6e-6)
    np.testing.assert_allclose(out.attrs["cell"], SKEWED_CELL, atol=1e-5)
    np.testing.assert_allclose(out.attrs["positions"], elf_field.attrs["positions"], atol=1e-5)


def test_qe_flavour_density(rho_field):
    # QE pp.x: list-directed title lines, valence charge in the charge column, e/Bohr³ values
    in_file = rho_field.values * Bohr**3
    text = _cube_text(in_file, SKEWED_CELL, rho_field.attrs["positions"], [1, 1],
                      title=" Cubfile created from PWScf calculation", comment=" Total SCF Density",
                      charge=lambda z: float(z))
    out = _read_text(text)
    assert out.name == "rho"
    np.testing.assert_allclose(out.values, rho_field.values, rtol=6e-6)
    # an explicit name wins over the title
    assert _read_text(text, name="elf").name == "elf"


def test_angstrom_units_and_origin():
    values = np.arange(24, dtype=float).reshape(2, 3, 4) / 24
    text = "t\nc\n    1  1.0  2.0  3.0\n   -2  1.5 0 0\n   -3 0 1.0 0\n   -4 0 0 0.5\n    1 0.0 1.0 2.0 3.0\n"
    text += " ".join(f"{v:.6e}" for v in values.ravel()) + "\n"
    out = _read_text(text)
    np.testing.assert_allclose(out.attrs["cell"], np.diag([3.0, 3.0, 2.0]))
    np.testing.assert_allclose(out.attrs["positions"], [[0.0, 0.0, 0.0]])
    np.testing.assert_allclose(out.attrs["cube_origin"], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(out.values, values, rtol=1e-6)


def test_duplicated_periodic_plane_is_dropped(rng):
    n = (4, 5, 6)
    idx = np.indices(n).reshape(3, -1).T / np.asarray(n)
    periodic = (np.cos(2 * np.pi * idx[:, 0]) + np.sin(2 * np.pi * (idx[:, 1] + 2 * idx[:, 2]))).reshape(n)
    padded = np.pad(periodic, ((0, 1), (0, 1), (0, 1)), mode="wrap")  # N+1 points, last = first
    text = _cube_text(padded, SKEWED_CELL, np.zeros((1, 3)), [1], title="dup", comment="plane",
                      charge=lambda z: 0.0, voxel_counts=n)
    out = _read_text(text, name="elf")
    assert out.shape == n
    assert out.attrs["duplicate_plane_dropped"] == "a,b,c"
    np.testing.assert_allclose(out.attrs["cell"], SKEWED_CELL, atol=1e-5)
    np.testing.assert_allclose(out.values, periodic, rtol=1e-5, atol=1e-5)
    kept = read_cube(io.StringIO(text), periodic_plane="keep")
    assert kept.shape == (5, 6, 7)


def test_vacuum_planes_are_not_taken_for_duplicates():
    values = np.zeros((5, 5, 5))
    values[1:4, 1:4, 1:4] = 0.5  # first and last planes both all zero: vacuum, not a duplicate
    text = _cube_text(values, np.eye(3) * 5, np.zeros((0, 3)), [], title="t", comment="c", charge=float)
    assert _read_text(text).shape == (5, 5, 5)


def test_orbital_cube_with_negative_atom_count():
    text = "t\nc\n   -1 0 0 0\n    2 1 0 0\n    2 0 1 0\n    2 0 0 1\n    1 0 0 0 0\n    1   7\n"
    text += "1 2 3 4 5 6 7 8\n"
    out = _read_text(text)
    assert out.shape == (2, 2, 2) and float(out.values.max()) == 8.0


@pytest.mark.parametrize(
    "header_change, data, message",
    [
        (("    2 1 0 0", "    0 1 0 0"), "1 2 3 4 5 6 7 8", "zero size"),
        (("    2 0 0 1", "    2 1 0 0"), "1 2 3 4 5 6 7 8", "zero volume"),
        (None, "1 2 3 4 5 6 7", "expected 8 values"),
        (None, "1 2 3 4 5 6 7 8 9", "more values"),
        (None, "1 2 3 x 5 6 7 8", "'x' is not a number"),
        (None, "1 2 3 nan 5 6 7 8", "not finite"),
        (None, "1 2 3 inf 5 6 7 8", "not finite"),
        (("    1 0 0 0 0", "    1 0 0 0"), "1 2 3 4 5 6 7 8", "atom 1"),
    ],
)
def test_errors_are_one_line_format_errors(header_change, data, message):
    header = "t\nc\n    1 0 0 0\n    2 1 0 0\n    2 0 1 0\n    2 0 0 1\n    1 0 0 0 0\n"
    if header_change:
        header = header.replace(*header_change)
    with pytest.raises(FormatError) as err:
        _read_text(header + data + "\n")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_error_reports_line_number():
    header = "t\nc\n    0 0 0 0\n    2 1 0 0\n    2 0 1 0\n    2 0 0 1\n"
    with pytest.raises(FormatError) as err:
        read_field(io.StringIO(header + "1 2\n3 4\n5 ?\n7 8\n"), format="cube")
    assert err.value.line == 9


def test_truncated_header():
    with pytest.raises(ElfcoreError, match="truncated header"):
        _read_text("t\nc\n    1 0 0 0\n    2 1 0 0\n")


DATA = Path(__file__).parent / "data"
H4_POSITIONS = np.array([[0.0, 0.0, 0.0], [0.74, 0.0, 0.0], [1.5, 1.5, 1.5], [1.5, 1.5, 2.24]])


def test_real_cp2k_elf_cube(tmp_path):
    elf = read_field(DATA / "cp2k_h4_elf.cube.gz")
    assert elf.name == "elf" and elf.shape == (24, 20, 24)
    np.testing.assert_allclose(elf.attrs["cell"], np.diag([3.2, 3.0, 3.1]), atol=2e-5)
    np.testing.assert_allclose(elf.attrs["positions"], H4_POSITIONS, atol=2e-6)
    assert 0.0 <= float(elf.min()) and float(elf.max()) <= 1.0 + 1e-5
    assert "duplicate_plane_dropped" not in elf.attrs
    write_field(elf, tmp_path / "again.cube")
    np.testing.assert_allclose(read_field(tmp_path / "again.cube").values, elf.values, rtol=6e-6)


def test_real_cp2k_density_integrates_to_electron_count():
    rho = read_field(DATA / "cp2k_h4_density.cube.gz")
    assert rho.name == "rho"  # from the title "ELECTRON DENSITY": converted from e/Bohr³ to e/Å³
    volume = abs(np.linalg.det(rho.attrs["cell"]))
    assert float(rho.mean()) * volume == pytest.approx(4.0, rel=2e-3)
