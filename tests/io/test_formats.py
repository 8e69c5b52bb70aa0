"""The format registry: one table, sniffing by name then content, compression, streams, errors."""
import io
import shutil

import numpy as np
import pytest

from elfcore.errors import FormatError, UnknownFormatError
from elfcore.io import FORMATS, known_formats, read_case, read_field, sniff_format, write_case, write_field
from elfcore.io.formats import FormatSpec, register

NAMES = {"cube": "f.cube", "xsf": "f.xsf", "netcdf": "f.nc", "elfcar": "ELFCAR", "chgcar": "CHGCAR"}


def test_table_lists_every_format():
    assert set(known_formats()) == set(NAMES)
    for spec in FORMATS.values():
        assert spec.description and spec.module


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="extension 'cube'"):
        register(FormatSpec("cube2", "another cube", "cube", extensions=("cube",)))
    with pytest.raises(ValueError, match="already registered"):
        register(FormatSpec("xsf", "again", "xsf"))
    assert "cube2" not in FORMATS


@pytest.mark.parametrize("fmt", sorted(NAMES))
@pytest.mark.parametrize("compression", ["", ".gz", ".bz2", ".xz"])
def test_round_trip_every_format_and_compression(tmp_path, elf_field, fmt, compression):
    path = tmp_path / (NAMES[fmt] + compression)
    write_field(elf_field, path)
    assert sniff_format(path) == fmt
    out = read_field(path)
    assert out.attrs["source_format"] == fmt
    np.testing.assert_allclose(out.values, elf_field.values, rtol=1e-5 if fmt == "cube" else 1e-10)
    # without a telling name, the content decides (compressed or not)
    bare = tmp_path / f"bare{compression}"
    shutil.copy(path, bare)
    assert sniff_format(bare) == fmt
    np.testing.assert_allclose(read_field(bare).values, out.values)


@pytest.mark.parametrize("fmt", sorted(NAMES))
def test_streams(fmt, elf_field):
    buf = io.BytesIO()
    write_field(elf_field, buf, format=fmt)
    buf.seek(0)
    out = read_field(buf, format=fmt)
    assert out.shape == elf_field.shape


def test_text_stream(elf_field):
    buf = io.StringIO()
    write_field(elf_field, buf, format="xsf")
    buf.seek(0)
    assert sniff_format(buf) == "xsf" and buf.tell() == 0
    assert read_field(buf).shape == elf_field.shape  # content sniffed from the stream


def test_unknown_format_lists_known_names(tmp_path, elf_field):
    junk = tmp_path / "notes.txt"
    junk.write_text("just some text\nnothing volumetric\n")
    with pytest.raises(UnknownFormatError, match="known formats: .*cube"):
        read_field(junk)
    with pytest.raises(UnknownFormatError, match="known formats"):
        read_field(junk, format="pdb")
    with pytest.raises(UnknownFormatError, match="cannot tell"):
        write_field(elf_field, tmp_path / "out.dat")


def test_write_case_needs_a_case_format(tmp_path, elf_field):
    from elfcore.grid import field_atoms, make_case

    case = make_case(field_atoms(elf_field), {"elf_ref": elf_field.values})
    with pytest.raises(UnknownFormatError, match="case formats: netcdf"):
        write_case(case, tmp_path / "c.cube")
    # any field format reads as a one-field case
    write_field(elf_field, tmp_path / "ELFCAR")
    one = read_case(tmp_path / "ELFCAR")
    assert list(one.data_vars)[-1] == "elf" and one.attrs["source_format"] == "elfcar"


def test_missing_empty_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_field(tmp_path / "missing.cube")
    (tmp_path / "empty.cube").write_text("")
    with pytest.raises(FormatError, match="empty"):
        read_field(tmp_path / "empty.cube")
    with pytest.raises(FormatError, match="directory"):
        read_field(tmp_path, format="cube")


def test_corrupt_compression(tmp_path, elf_field):
    path = tmp_path / "f.cube.gz"
    write_field(elf_field, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="corrupt"):
        read_field(path)


def test_failed_write_leaves_no_file(tmp_path, elf_field, monkeypatch):
    from elfcore.errors import GridError
    from elfcore.io import cube

    with pytest.raises(GridError):
        write_field("not a field", tmp_path / "x.cube")

    def broken(fileobj, field):
        fileobj.write("partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(cube, "write_cube", broken)
    with pytest.raises(RuntimeError):
        write_field(elf_field, tmp_path / "x.cube")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", sorted(NAMES))
def test_degenerate_one_point_grid_without_atoms(tmp_path, fmt):
    from elfcore.grid import make_field

    field = make_field(np.full((1, 1, 1), 0.25), np.diag([2.0, 3.0, 4.0]), name="rho" if fmt == "chgcar" else "elf")
    path = tmp_path / NAMES[fmt]
    write_field(field, path)
    out = read_field(path)
    assert out.shape == (1, 1, 1) and len(out.attrs["numbers"]) == 0
    assert float(out.values[0, 0, 0]) == pytest.approx(0.25, rel=1e-5)
    np.testing.assert_allclose(out.attrs["cell"], field.attrs["cell"], atol=1e-6)
