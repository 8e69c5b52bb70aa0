"""Fixtures of the io tests: small generated fields on a skewed cell."""
import numpy as np
import pytest

from elfcore.grid import make_field

SKEWED_CELL = np.array([[4.0, 0.0, 0.0], [1.0, 5.0, 0.0], [0.5, 0.3, 6.0]])


@pytest.fixture
def elf_field(rng):
    """ELF-like field (values in [0, 1]) of shape (4, 5, 6) with three atoms (H, H, Li)."""
    positions = rng.random((3, 3)) @ SKEWED_CELL
    return make_field(rng.random((4, 5, 6)), SKEWED_CELL, positions, [1, 1, 3], name="elf")


@pytest.fixture
def rho_field(rng):
    """Density-like field (e/Å³) of shape (4, 5, 6) with two H atoms."""
    positions = rng.random((2, 3)) @ SKEWED_CELL
    return make_field(0.05 + 0.3 * rng.random((4, 5, 6)), SKEWED_CELL, positions, [1, 1], name="rho")
