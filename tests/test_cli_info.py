"""`elfcore info`: every format, --json keys, netCDF cases, one-line errors without tracebacks."""
import json

import numpy as np
import pytest

from elfcore.cli import main
from elfcore.grid import field_atoms, make_case, make_field
from elfcore.io import write_case, write_field

CELL = np.array([[4.0, 0.0, 0.0], [1.0, 5.0, 0.0], [0.5, 0.3, 6.0]])


@pytest.fixture
def field(rng):
    return make_field(rng.random((4, 5, 6)), CELL, rng.random((3, 3)) @ CELL, [1, 1, 3], name="elf")


@pytest.mark.parametrize("name, fmt", [("ELFCAR", "elfcar"), ("CHGCAR", "chgcar"), ("f.cube", "cube"),
                                       ("f.xsf", "xsf"), ("f.nc", "netcdf"), ("f.cube.gz", "cube")])
def test_info_json_every_format(tmp_path, capsys, field, name, fmt):
    path = tmp_path / name
    write_field(field.rename("rho") if fmt == "chgcar" else field, path)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("format", "shape", "cell", "natoms", "species", "min", "mean", "max", "spacing", "periodic_plane"):
        assert key in info
    assert info["format"] == fmt and info["shape"] == [4, 5, 6] and info["natoms"] == 3
    assert info["species"] == {"H": 2, "Li": 1}
    np.testing.assert_allclose(info["cell"], CELL, atol=1e-6)
    np.testing.assert_allclose([info["min"], info["mean"], info["max"]],
                               [field.values.min(), field.values.mean(), field.values.max()], rtol=1e-4)
    np.testing.assert_allclose(info["spacing"], np.linalg.norm(CELL, axis=1) / [4, 5, 6])
    expected_dropped = ["a", "b", "c"] if fmt == "xsf" else []
    assert info["periodic_plane"]["dropped"] == expected_dropped


def test_info_text_and_case(tmp_path, capsys, field):
    case = make_case(field_atoms(field), {"elf_ref": field.values, "elf_pred": field.values * 0.5},
                     attrs={"code": "cp2k"})
    path = tmp_path / "case.nc"
    write_case(case, path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "elf_ref" in out and "elf_pred" in out and "H2 Li1" in out and "4 x 5 x 6" in out
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["field"] == "elf_ref" and set(info["fields"]) == {"elf_ref", "elf_pred"}
    assert info["fields"]["elf_pred"]["max"] == pytest.approx(0.5 * field.values.max())


def test_info_reports_duplicated_plane(tmp_path, capsys):
    n = 4
    x = np.arange(n + 1) / n
    values = np.cos(2 * np.pi * x)[:, None, None] + np.sin(2 * np.pi * x)[None, :, None] + 0 * x[None, None, :]
    values = values + np.cos(2 * np.pi * x)[None, None, :]  # last plane repeats the first on every axis
    cube = "t\nc\n    0 0 0 0\n" + "".join(f"    {n + 1} " + " ".join("0.5" if i == j else "0" for j in range(3)) + "\n"
                                        for i in range(3))
    cube += " ".join(f"{v:.6e}" for v in values.ravel()) + "\n"
    (tmp_path / "dup.cube").write_text(cube)
    assert main(["info", str(tmp_path / "dup.cube")]) == 0
    out = capsys.readouterr().out
    assert "repeats its first plane as the last along a,b,c; dropped" in out
    assert "4 x 4 x 4" in out


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        ("hello\nworld\n", "cannot tell the file format"),
        ("t\nc\n    0 0 0 0\n    2 1 0 0\n    2 0 1 0\n    2 0 0 1\n1 2 3\n", "expected 8 values"),
        ("t\nc\n    0 0 0 0\n    2 1 0 0\n    2 0 1 0\n    2 0 0 1\n1 2 3 x 5 6 7 8\n", "'x' is not a number"),
        ("t\nc\n    0 0 0 0\n    2 1 0 0\n    2 0 1 0\n    2 0 0 1\n1 2 3 nan 5 6 7 8\n", "not finite"),
        ("t\nc\n    0 0 0 0\n    0 1 0 0\n    2 0 1 0\n    2 0 0 1\n1 2 3 4\n", "grid of zero size"),
        ("t\nc\n    0 0 0 0\n    2 1 0 0\n    2 2 0 0\n    2 0 0 1\n1 2 3 4 5 6 7 8\n", "zero volume"),
    ],
)
def test_info_errors_one_line_no_traceback(tmp_path, capsys, content, message):
    path = tmp_path / ("data.cube" if content and content.startswith("t\n") else "data.txt")
    if content is not None:
        path.write_text(content)
    assert main(["info", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert err.startswith("elfcore info: error:")


def test_info_mentions_spin_blocks(tmp_path, capsys):
    header = ("spin\n1.0\n 3 0 0\n 0 3 0\n 0 0 3\n H\n 1\nDirect\n 0 0 0\n\n 1 1 2\n")
    (tmp_path / "CHGCAR").write_text(header + " 1.0 2.0\naugmentation occupancies 1 1\n 0.1\n 1 1 2\n 0.5 0.5\n")
    assert main(["info", str(tmp_path / "CHGCAR")]) == 0
    assert "2 data blocks (spin); block 0 shown" in capsys.readouterr().out
