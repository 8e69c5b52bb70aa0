"""XSF DATAGRID_3D: round trip, Fortran order, duplicated boundary plane, errors."""
import io

import numpy as np
import pytest

from elfcore.errors import FormatError
from elfcore.io import read_field, write_field

from .conftest import SKEWED_CELL

HAND_WRITTEN = """# comment line
CRYSTAL
PRIMVEC
  4.0 0.0 0.0
  1.0 5.0 0.0
  0.5 0.3 6.0
PRIMCOORD
  2 1
  H  0.0 0.0 0.0
  1  1.0 1.0 1.0   0.0 0.0 0.0
BEGIN_BLOCK_DATAGRID_3D
  my grid
  DATAGRID_3D_ELF
    3 4 5
    0.0 0.0 0.0
    4.0 0.0 0.0
    1.0 5.0 0.0
    0.5 0.3 6.0
{data}
  END_DATAGRID_3D
END_BLOCK_DATAGRID_3D
"""


def _periodic_values():
    n = (2, 3, 4)
    i, j, k = np.indices(n)
    return n, 100 * i + 10 * j + k  # distinct values expose any axis mix-up


def test_round_trip(tmp_path, elf_field):
    path = tmp_path / "elf.xsf"
    write_field(elf_field, path)
    out = read_field(path)
    assert out.name == "elf" and out.shape == elf_field.shape
    np.testing.assert_allclose(out.values, elf_field.values, rtol=1e-10)
    np.testing.assert_allclose(out.attrs["cell"], SKEWED_CELL, atol=1e-14)
    np.testing.assert_allclose(out.attrs["positions"], elf_field.attrs["positions"], atol=1e-14)
    assert out.attrs["duplicate_plane_dropped"] == "a,b,c"
    assert "duplicate_plane_mismatch" not in out.attrs


def test_fortran_order_and_duplicate_plane():
    n, values = _periodic_values()
    padded = np.pad(values, ((0, 1), (0, 1), (0, 1)), mode="wrap")  # 3 x 4 x 5 general grid
    data = "\n".join(" ".join(str(v) for v in padded.transpose(2, 1, 0).ravel()[i : i + 7])
                     for i in range(0, padded.size, 7))
    out = read_field(io.StringIO(HAND_WRITTEN.format(data=data)), format="xsf")
    assert out.name == "ELF" and out.shape == n
    np.testing.assert_array_equal(out.values, values)
    np.testing.assert_array_equal(out.attrs["numbers"], [1, 1])


def test_non_periodic_grid_is_flagged():
    _, values = _periodic_values()
    padded = np.pad(values, ((0, 1), (0, 1), (0, 1)), mode="edge")  # last plane differs from first
    data = " ".join(str(v) for v in padded.transpose(2, 1, 0).ravel())
    out = read_field(io.StringIO(HAND_WRITTEN.format(data=data)), format="xsf")
    assert out.attrs["duplicate_plane_mismatch"] == "a,b,c"


@pytest.mark.parametrize(
    "change, message",
    [
        (("    3 4 5", "    1 4 5"), "needs ≥ 2 points"),
        (("  END_DATAGRID_3D\n", ""), "truncated"),
        (("  2 1\n", "  3 1\n"), "atom 3"),
        (("CRYSTAL", "FOO"), "unknown XSF keyword"),
        (("  H  0.0", "  Qq 0.0"), "not an element"),
    ],
)
def test_errors(change, message):
    data = " ".join(["0.5"] * 60)
    with pytest.raises(FormatError, match=message):
        read_field(io.StringIO(HAND_WRITTEN.format(data=data).replace(*change)), format="xsf")
