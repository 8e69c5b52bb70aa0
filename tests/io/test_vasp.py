"""VASP ELFCAR/CHGCAR: round trips, ρ·V convention, spin blocks, augmentation, header variants."""
import io

import numpy as np
import pytest

from elfcore.errors import FormatError
from elfcore.io import read_field, sniff_format, write_field
from elfcore.io.vasp import read_chgcar, read_elfcar

from .conftest import SKEWED_CELL

HEADER = """test system
   1.0
     4.0 0.0 0.0
     1.0 5.0 0.0
     0.5 0.3 6.0
   H
   2
Direct
  0.1 0.2 0.3
  0.6 0.7 0.8

    2    3    4
"""
VOLUME = 120.0


def _block(values, per_line=5):
    flat = values.transpose(2, 1, 0).ravel()  # x fastest
    return "".join(
        "".join(f" {v:17.11E}" for v in flat[i : i + per_line]) + "\n" for i in range(0, flat.size, per_line)
    )


def _aug(natoms=2):
    out = ""
    for i in range(natoms):
        out += f"augmentation occupancies {i + 1:3d}  5\n  0.1234567E+00 -0.2345678E-01  0.3E-02  0.4E-02\n  0.5E-02\n"
    return out


def test_round_trip_elfcar_values_kept(tmp_path, elf_field):
    path = tmp_path / "ELFCAR"
    write_field(elf_field, path)
    out = read_field(path)
    assert out.name == "elf" and out.attrs["source_format"] == "elfcar"
    np.testing.assert_allclose(out.values, elf_field.values, rtol=1e-11)
    np.testing.assert_allclose(out.attrs["cell"], SKEWED_CELL, atol=1e-14)
    np.testing.assert_allclose(out.attrs["positions"], elf_field.attrs["positions"], atol=1e-13)
    np.testing.assert_array_equal(out.attrs["numbers"], [1, 1, 3])


def test_round_trip_chgcar_divides_by_volume(tmp_path, rho_field):
    path = tmp_path / "CHGCAR"
    write_field(rho_field, path)
    first = float(path.read_text().split("\n\n")[1].split()[3])  # after "na nb nc"
    assert first == pytest.approx(rho_field.values[0, 0, 0] * VOLUME, rel=1e-10)
    out = read_field(path)
    assert out.name == "rho"
    np.testing.assert_allclose(out.values, rho_field.values, rtol=1e-11)


def test_fortran_order_and_elfcar_not_divided():
    values = np.arange(24, dtype=float).reshape(2, 3, 4) / 24
    out = read_elfcar(io.StringIO(HEADER + _block(values, per_line=10)))
    np.testing.assert_allclose(out.values, values, rtol=1e-11)
    np.testing.assert_allclose(out.attrs["positions"], np.array([[0.1, 0.2, 0.3], [0.6, 0.7, 0.8]]) @ SKEWED_CELL)


def test_spin_chgcar_with_augmentation():
    total = np.linspace(1.0, 5.0, 24).reshape(2, 3, 4)
    magnet = np.linspace(-0.5, 0.5, 24).reshape(2, 3, 4)
    text = HEADER + _block(total * VOLUME) + _aug() + "  0.1 0.2\n    2    3    4\n" + _block(magnet * VOLUME) + _aug()
    out = read_field(io.StringIO(text), format="chgcar")
    assert out.attrs["vasp_blocks"] == 2
    np.testing.assert_allclose(out.values, total, rtol=1e-11)
    second = read_chgcar(io.StringIO(text), block=1)
    np.testing.assert_allclose(second.values, magnet, rtol=1e-10, atol=1e-14)
    with pytest.raises(FormatError, match="block 2 requested"):
        read_chgcar(io.StringIO(text), block=2)


def test_spin_elfcar_two_blocks():
    up = np.linspace(0.1, 0.9, 24).reshape(2, 3, 4)
    down = up[::-1].copy()
    text = HEADER + _block(up, 10) + "    2    3    4\n" + _block(down, 10)
    assert read_elfcar(io.StringIO(text)).attrs["vasp_blocks"] == 2
    np.testing.assert_allclose(read_elfcar(io.StringIO(text), block=1).values, down, rtol=1e-11)


def test_header_variants():
    values = np.full((2, 3, 4), 0.5)
    # VASP 4 (symbols only in the comment), negative scale = volume, Cartesian, selective dynamics
    text = ("H\n  -240.0\n 4 0 0\n 1 5 0\n 0.5 0.3 6\n 2\nSelective dynamics\nCartesian\n"
            " 0 0 0 T T T\n 1 1 1 F F F\n\n 2 3 4\n" + _block(values))
    out = read_elfcar(io.StringIO(text))
    factor = 2.0 ** (1.0 / 3.0)
    np.testing.assert_allclose(out.attrs["cell"], SKEWED_CELL * factor)
    np.testing.assert_allclose(out.attrs["positions"], [[0, 0, 0], [factor, factor, factor]])
    # VASP 6 style symbols with a POTCAR hash suffix
    text6 = HEADER.replace("   H\n", "   H/a1b2c3\n") + _block(values)
    np.testing.assert_array_equal(read_elfcar(io.StringIO(text6)).attrs["numbers"], [1, 1])


def test_sniff_by_content(tmp_path, elf_field, rho_field):
    (tmp_path / "a").write_text(HEADER + _block(np.full((2, 3, 4), 0.5)))
    (tmp_path / "b").write_text(HEADER + _block(np.full((2, 3, 4), 40.0)) + _aug())
    assert sniff_format(tmp_path / "a") == "elfcar"
    assert sniff_format(tmp_path / "b") == "chgcar"
    assert sniff_format("run1_ELFCAR.gz") == "elfcar" and sniff_format("CHGCAR.bz2") == "chgcar"


@pytest.mark.parametrize(
    "text, message",
    [
        (HEADER + _block(np.ones((2, 3, 4))).rsplit("\n", 2)[0] + "\n", "expected 24 values"),
        (HEADER + _block(np.ones((2, 3, 4)))[:-40], "is not a number"),
        (HEADER.replace("2    3    4", "2    3    0") + "1\n", "zero size"),
        (HEADER.replace("   H\n", "   Xx\n"), "not an element symbol"),
        (HEADER.replace("   2\nDirect", "   3\nDirect"), "position of atom 3"),
        (HEADER.replace("1.0 5.0 0.0", "8.0 0.0 0.0"), "zero volume"),
        (HEADER + _block(np.ones((2, 3, 4))).replace("1.00000000000E+00", "NaN", 1), "not finite"),
        (HEADER + _block(np.ones((2, 3, 4))).replace("1.00000000000E+00", "1.0D+00", 1), "not a number"),
        (HEADER + _block(np.ones((2, 3, 5))), "more values"),
    ],
)
def test_errors(text, message):
    with pytest.raises(FormatError) as err:
        read_field(io.StringIO(text), format="elfcar")
    assert message in str(err.value) and "\n" not in str(err.value)
