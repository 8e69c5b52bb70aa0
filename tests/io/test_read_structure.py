"""read_structure: ase formats and elfcore field files, with a case's pressure and MD time in atoms.info."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from elfcore.errors import FormatError
from elfcore.grid import make_case
from elfcore.io import read_structure


def _atoms():
    return Atoms("H4", positions=[[0, 0, 0], [0.75, 0, 0], [1.6, 1.6, 1.6], [2.35, 1.6, 1.6]],
                 cell=np.eye(3) * 3.2, pbc=True)


def test_netcdf_case_gives_its_structure_and_state_point(tmp_path):
    path = tmp_path / "case.nc"
    ds = make_case(_atoms(), {"elf_ref": np.full((6, 6, 6), 0.5)},
                   attrs={"pressure_gpa": 107.8, "time_fs": 300.0, "md_step": 440, "name": "x"})
    ds.to_netcdf(path, engine="h5netcdf")
    atoms = read_structure(path)
    assert len(atoms) == 4 and np.allclose(atoms.cell[:], np.eye(3) * 3.2)
    assert atoms.info["pressure_gpa"] == pytest.approx(107.8) and atoms.info["time_fs"] == 300.0
    assert atoms.info["md_step"] == 440 and "name" not in atoms.info


def test_ase_formats_and_errors(tmp_path):
    import ase.io

    path = tmp_path / "POSCAR"
    ase.io.write(path, _atoms(), format="vasp")
    assert len(read_structure(path)) == 4
    with pytest.raises(FileNotFoundError):
        read_structure(tmp_path / "missing.xyz")
    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\n_cell_length_a oops\n")
    with pytest.raises(FormatError):
        read_structure(bad)
