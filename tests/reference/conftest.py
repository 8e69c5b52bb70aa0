"""Fixtures of the reference-data tests: a tiny fixed structure and cheap settings."""
import numpy as np
import pytest
from ase import Atoms

from elfcore.reference.cp2k import CP2KSettings, MDSettings


@pytest.fixture
def h4():
    """Two H2 molecules in a small orthorhombic cell (Å)."""
    return Atoms(
        "H4",
        positions=[[0.0, 0.0, 0.0], [0.74, 0.0, 0.0], [1.5, 1.5, 1.5], [1.5, 1.5, 2.24]],
        cell=[3.2, 3.0, 3.1],
        pbc=True,
    )


@pytest.fixture
def tiny_settings():
    """Cheap CP2K settings for runs that must finish in seconds."""
    return CP2KSettings(basis="SZV-MOLOPT-SR-GTH", cutoff_ry=120, rel_cutoff_ry=30, eps_scf=1e-6,
                        added_mos=4, eps_default=1e-8, max_scf=50)


@pytest.fixture
def tiny_md():
    return MDSettings(steps=3, timestep_fs=0.5, temperature_k=1000.0, thermostat_timecon_fs=10.0, seed=7)
