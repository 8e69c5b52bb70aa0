"""The one structure validator, elfcore.io.validate.check_atoms, and the callers built on it."""
import logging

import numpy as np
import pytest
from ase import Atoms

from elfcore.errors import StructureError
from elfcore.io.validate import MIN_ATOM_DISTANCE, check_atoms, check_prediction_structure

CELL = np.eye(3) * 4.0


def h2(d=0.74, cell=CELL):
    return Atoms("H2", positions=[[1, 1, 1], [1 + d, 1, 1]], cell=cell, pbc=True)


def test_returns_float_and_int_arrays():
    cell, pos, num = check_atoms(h2())
    assert cell.dtype == np.float64 and cell.shape == (3, 3)
    assert pos.dtype == np.float64 and pos.shape == (2, 3)
    assert num.dtype == np.int64 and num.tolist() == [1, 1]


def test_not_atoms_refused():
    with pytest.raises(StructureError, match="expected an ase.Atoms structure, got list"):
        check_atoms([[0, 0, 0]])


def test_empty_structure_only_when_required():
    empty = Atoms(cell=CELL, pbc=True)
    assert check_atoms(empty)[1].shape == (0, 3)
    with pytest.raises(StructureError, match="^frame 3 has no atoms$"):
        check_atoms(empty, require_atoms=True, where="frame 3")


def test_nonfinite_positions_named_from_one():
    atoms = Atoms("H3", positions=[[0, 0, 0], [np.nan, 0, 0], [0, np.inf, 0]], cell=CELL, pbc=True)
    with pytest.raises(StructureError, match=r"positions of atoms \[2, 3\] are NaN or inf"):
        check_atoms(atoms, require_cell=False)


def test_species_message_names_elements_and_count():
    atoms = Atoms("H2OLi", positions=np.zeros((4, 3)), cell=CELL, pbc=True)
    with pytest.raises(StructureError) as err:
        check_atoms(atoms, species=("H",), species_of="descriptor's")
    assert str(err.value) == ("the structure contains Li (Z=3), O (Z=8), not among the descriptor's species ['H'] "
                              "(hydrogen only); 2 of 4 atoms")
    check_atoms(atoms, species=("H", "O", "Li"))  # all allowed
    check_atoms(atoms)  # species not checked


def test_cell_required_unless_told_otherwise():
    bare = Atoms("H", positions=[[0, 0, 0]])
    with pytest.raises(StructureError, match="needs a periodic cell of non-zero volume"):
        check_atoms(bare)
    flat = Atoms("H", positions=[[0, 0, 0]], cell=[[1, 0, 0], [0, 1, 0], [1, 1, 0]], pbc=True)
    with pytest.raises(StructureError, match="periodic cell"):
        check_atoms(flat)
    assert check_atoms(bare, require_cell=False)[0].tolist() == np.zeros((3, 3)).tolist()


def test_bounds_are_the_readers_checks():
    huge = Atoms("H", positions=[[0, 0, 0]], cell=np.eye(3) * 1e200, pbc=True)
    check_atoms(huge)  # finite, non-zero volume: passes without bounds
    with pytest.raises(StructureError, match="at most"):
        check_atoms(huge, bounds=True)


def test_cell_period_against_sigma():
    with pytest.raises(StructureError, match="repeats every 0.2 Å"):
        check_atoms(Atoms("H", positions=[[0, 0, 0]], cell=np.diag([3.0, 3.0, 0.2]), pbc=True), sigma=0.5)
    check_atoms(h2(), sigma=0.5)


def test_distances_refused_and_warned(caplog):
    with pytest.raises(StructureError, match="atoms 1 and 2 are 0.050 Å apart"):
        check_atoms(h2(0.05), min_distance=MIN_ATOM_DISTANCE)
    image = Atoms("H", positions=[[0, 0, 0]], cell=np.diag([4.0, 4.0, 0.05]), pbc=True)
    with pytest.raises(StructureError, match="atom 1 and its image"):
        check_atoms(image, min_distance=MIN_ATOM_DISTANCE)
    with caplog.at_level(logging.WARNING, logger="elfcore.io.validate"):
        check_atoms(h2(0.3), min_distance=MIN_ATOM_DISTANCE)
    assert "0.300 Å apart" in caplog.text
    check_atoms(h2(0.05))  # no distance check unless asked


def test_prediction_structure_uses_the_core():
    with pytest.raises(StructureError, match="overlapping atoms"):
        check_prediction_structure(h2(0.05), 0.5)
    check_prediction_structure(Atoms(cell=CELL, pbc=True), 0.5)
    with pytest.raises(StructureError, match="no atoms"):
        check_prediction_structure(Atoms(cell=CELL, pbc=True), 0.5, require_atoms=True)


def test_every_engine_caller_refuses_alike():
    from elfcore.descriptor import _structure
    from elfcore.reference.cp2k import _check_atoms
    from elfcore.sampling import check_structure

    water = Atoms("H2O", positions=[[0, 0, 0], [0.7, 0, 0], [0, 1, 0]], cell=CELL, pbc=True)
    for check in (_structure, check_structure):
        with pytest.raises(StructureError, match=r"O \(Z=8\), not among the .* species \['H'\] \(hydrogen only\)"):
            check(water)
    # the CP2K reference also takes the metals of the hydride cases (cp2k.ELEMENT_KINDS), and names them
    with pytest.raises(StructureError, match=r"O \(Z=8\), not among the CP2K reference's .* species \['H', .*'La'\]"):
        _check_atoms(water)
    nan = Atoms("H", positions=[[np.nan, 0, 0]], cell=CELL, pbc=True)
    for check in (_structure, _check_atoms, check_structure):
        with pytest.raises(StructureError, match="NaN or inf"):
            check(nan)
    empty = Atoms(cell=CELL, pbc=True)
    for check in (_check_atoms, check_structure):
        with pytest.raises(StructureError, match="no atoms"):
            check(empty)
    assert _structure(empty)[1].shape == (0, 3)  # the descriptor of no atoms is zero, not an error
