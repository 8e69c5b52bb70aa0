"""Quantum ESPRESSO cross-check on a tiny CP2K case (seconds)."""
import shutil

import numpy as np
import pytest

from elfcore.errors import DFTError
from elfcore.reference import cp2k, qe


def test_max_ecutwfc_fits_grid():
    # cubic 10 bohr cell, 60 points: G_max = 60 pi / 10 bohr^-1 -> ecutrho <= G_max^2 Ry
    cell = np.eye(3) * 10 * cp2k.BOHR
    e = qe.max_ecutwfc(cell, (60, 60, 60))
    assert e == np.floor(0.98 * (60 * np.pi / 10) ** 2 / 4)
    assert qe.max_ecutwfc(cell, (30, 60, 60)) < e


def test_missing_pseudo_is_a_dft_error(tmp_path):
    with pytest.raises(DFTError, match="pseudopotential"):
        qe.find_pseudo(str(tmp_path / "nope.UPF"))


@pytest.mark.cp2k
@pytest.mark.slow
def test_cross_check_tiny(h4, tiny_settings, tmp_path):
    try:
        cp2k.find_cp2k()
        qe.find_pseudo()
    except DFTError:
        pytest.skip("cp2k or the QE hydrogen pseudopotential is not installed")
    if shutil.which("pw.x") is None or shutil.which("pp.x") is None:
        pytest.skip("Quantum ESPRESSO not installed")
    cp2k.run_cp2k(cp2k.single_point_input(h4, tiny_settings, project="sp"), tmp_path / "cp2k", case="tiny",
                  threads=1)
    case = qe.case_from_run(tmp_path / "cp2k", h4, name="tiny", settings=tiny_settings)
    res = qe.cross_check(case, tmp_path / "qe", threads=1)
    assert res["grid"] == list(case["elf_ref"].shape) == res["grid_other"]
    # two codes, different pseudopotentials and basis: close but not identical
    assert 0.9 < res["r2"] < 1.0 and 0 < res["rmse"] < 0.1
    assert res["qe"]["ecutwfc_ry"] <= qe.max_ecutwfc(h4.cell[:], res["grid"])
