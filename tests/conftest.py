"""Shared test fixtures: explicit seeds, no global RNG state."""
import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fresh, seeded numpy Generator for each test."""
    return np.random.default_rng(20260427)
