"""Helpers shared by the descriptor tests."""
import numpy as np


def relerr(a, b) -> float:
    """Largest error per feature, relative to that feature's largest magnitude."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float((np.abs(a - b).max(0) / np.maximum(np.abs(b).max(0), 1e-300)).max())


def random_rotation(rng) -> np.ndarray:
    """A proper rotation matrix (det +1) drawn from ``rng``."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))
