"""Persistence-simplified critical-point census (elfcore.topology.persistence)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from elfcore.errors import GridError
from elfcore.grid import make_field
from elfcore.topology import TopologySettings, critical_census, persistence_diagram, topology_summary

DATA = os.path.join(os.path.dirname(__file__), "..", "assets", "data")


def _mesh(shape, shift=(0.0, 0.0, 0.0)):
    axes = [np.arange(n) / n + s for n, s in zip(shape, shift)]
    return np.meshgrid(*axes, indexing="ij")


def cosines(n=16, shift=(0.1, 0.2, 0.3)):
    """cos 2πx + cos 2πy + cos 2πz, sampled off its critical points (shift in fractions)."""
    x, y, z = _mesh((n, n, n), shift)
    return make_field(np.cos(2 * np.pi * x) + np.cos(2 * np.pi * y) + np.cos(2 * np.pi * z), np.eye(3) * 4.0)


def two_maxima(b=0.5, c=0.05, n=24):
    """g(x) + c(cos 2πy + cos 2πz), g = cos 2πx + b cos 4πx: maxima at x = 0 and ½.

    The lower maximum (value b − 1 + 2c) joins the higher one at the saddle where
    cos 2πx = −1/(4b) (value −1/(8b) − b + 2c): persistence 2b − 1 + 1/(8b).
    """
    x, y, z = _mesh((n, n, n))
    vals = np.cos(2 * np.pi * x) + b * np.cos(4 * np.pi * x) + c * (np.cos(2 * np.pi * y) + np.cos(2 * np.pi * z))
    return make_field(vals, np.diag([4.0, 3.0, 3.0]))


def test_cosines_one_point_of_each_kind_refined_to_the_analytic_positions():
    shift = (0.1, 0.2, 0.3)
    census = critical_census(cosines(shift=shift))
    assert census.counts == {"max": 1, "bond": 3, "ring": 3, "cage": 1}
    assert census.morse_sum == 0
    assert census.refined.all()
    # the only pairs are the 8 essential classes of the torus
    assert np.isinf(census.persistence).all() and (census.partner == -1).all()
    expect = {3: 3.0, 2: 1.0, 1: -1.0, 0: -3.0}
    for k, v in zip(census.kinds, census.values):
        assert v == pytest.approx(expect[int(k)], abs=1e-3)
    (imax,) = np.flatnonzero(census.kinds == 3)
    want = np.mod(-np.asarray(shift), 1.0)
    d = census.positions_frac[imax] - want
    d -= np.rint(d)
    assert np.abs(d).max() < 2e-3


def test_pair_persistence_matches_closed_form():
    b, c = 0.5, 0.05
    field = two_maxima(b, c)
    dg = persistence_diagram(field)
    expected = 2 * b - 1 + 1 / (8 * b)
    p0 = dg.persistence(0)
    assert np.max(p0) == pytest.approx(expected, abs=1e-12)
    assert np.sum(p0 > 1e-9) == 1
    for threshold, n_max in ((0.0, 2), (expected - 0.01, 2), (expected + 0.01, 1)):
        counts = dg.counts(threshold)
        assert counts["max"] == n_max and counts["morse_sum"] == 0
    census = critical_census(field, 0.01, refine=False)
    (lo,) = np.flatnonzero((census.kinds == 3) & np.isfinite(census.persistence))
    partner = census.partner[lo]
    assert census.kinds[partner] == 2 and census.partner[partner] == lo
    assert census.values[lo] == pytest.approx(b - 1 + 2 * c, abs=1e-12)
    assert census.values[partner] == pytest.approx(-1 / (8 * b) - b + 2 * c, abs=1e-12)
    assert census.grid_index[lo].tolist() == [12, 0, 0]


def test_morse_relation_at_every_threshold_and_monotone_counts(rng):
    vals = rng.random((10, 12, 14))
    field = make_field(vals, np.diag([3.0, 3.5, 4.0]))
    dg = persistence_diagram(field)
    prev = None
    for t in (0.0, 0.05, 0.1, 0.2, 0.4, 1.0):
        c = dg.counts(t)
        assert c["morse_sum"] == 0
        if prev is not None:
            assert all(c[k] <= prev[k] for k in ("max", "bond", "ring", "cage"))
        prev = c
    assert dg.counts(0.0)["max"] > 10
    assert dg.counts(1.0) == {"max": 1, "bond": 3, "ring": 3, "cage": 1, "morse_sum": 0}
    assert critical_census(field, 0.1, diagram=dg).counts == {k: v for k, v in dg.counts(0.1).items()
                                                              if k != "morse_sum"}


def test_origin_shift_and_supercell(rng):
    vals = rng.random((10, 12, 14))
    cell = np.diag([3.0, 3.5, 4.0])
    a = critical_census(make_field(vals, cell), 0.05, refine=False)
    b = critical_census(make_field(np.roll(vals, (3, -5, 7), axis=(0, 1, 2)), cell), 0.05, refine=False)
    assert a.counts == b.counts
    np.testing.assert_allclose(np.sort(a.values), np.sort(b.values))
    # every critical cell is local: a 2×1×1 supercell has twice as many of each kind
    one = persistence_diagram(make_field(vals, cell)).counts(0.0)
    two = persistence_diagram(make_field(np.tile(vals, (2, 1, 1)), np.diag([6.0, 3.5, 4.0]))).counts(0.0)
    assert {k: two[k] for k in ("max", "bond", "ring", "cage")} == {k: 2 * one[k] for k in ("max", "bond", "ring",
                                                                                          "cage")}


def test_bad_input():
    with pytest.raises(ValueError, match="min_persistence"):
        critical_census(cosines(), -0.1)
    with pytest.raises(ValueError, match="min_persistence"):
        TopologySettings(min_persistence=float("nan"))
    vals = np.zeros((6, 6, 6))
    vals[1, 2, 3] = np.nan
    with pytest.raises(GridError, match="NaN"):
        persistence_diagram(make_field(vals, np.eye(3) * 3.0))
    dg = persistence_diagram(cosines(12))
    with pytest.raises(ValueError, match="diagram"):
        critical_census(cosines(16), diagram=dg)


def test_summary_reports_the_census_and_the_spline_points():
    res = topology_summary(cosines(), bcp=True, bonds=True)
    assert res["critical_points"] == {"max": 1, "bond": 3, "ring": 3, "cage": 1}
    assert res["morse_sum"] == 0 and res["morse_ok"]
    assert res["critical_points_all"] == {"max": 1, "bond": 3, "ring": 3, "cage": 1}
    assert res["critical_points_spline"] == {"max": 1, "bond": 3, "ring": 3, "cage": 1}
    assert [p["kind"] for p in res["critical_point_list"]] == ["max"] + ["bond"] * 3 + ["ring"] * 3 + ["cage"]


def test_summary_skips_the_census_on_large_grids():
    res = topology_summary(cosines(), TopologySettings(census_max_points=1000), bcp=True)
    assert res["critical_points"] is None and "census_max_points" in res["census_skipped"]
    assert res["phi_bcp"] is not None and res["critical_points_spline"]["max"] == 1


def test_netval_cli_census_options(tmp_path, capsys):
    pytest.importorskip("h5netcdf")
    from elfcore.cli import main
    from elfcore.io import write_field

    path = tmp_path / "two.nc"
    write_field(two_maxima(), str(path))
    dg = persistence_diagram(two_maxima())
    for args, t in (([], 0.01), (["--min-persistence", "0.3"], 0.3)):
        c = dg.counts(t)
        assert main(["netval", str(path), *args]) == 0
        line = f"max {c['max']} bond {c['bond']} ring {c['ring']} cage {c['cage']}, Morse sum 0"
        assert line in capsys.readouterr().out
    assert dg.counts(0.01)["max"] == 2 and dg.counts(0.3)["max"] == 1
    assert main(["netval", str(path), "--census-max-points", "10"]) == 0
    assert "census skipped" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.exists(os.path.join(DATA, "fluid_p076_t0250.nc")), reason="no shipped data")
def test_dft_fluid_one_attractor_per_molecule():
    from elfcore.grid import case_field
    from elfcore.io import read_case
    from elfcore.topology import merge_tree

    field = case_field(read_case(os.path.join(DATA, "fluid_p076_t0250.nc")), "elf_ref")
    census = critical_census(field, refine=False)
    assert census.morse_sum == 0
    mt = merge_tree(field)
    # 64 H form 32 molecules; at persistence 0.01 each H₂ holds one ELF attractor
    assert census.counts["max"] == len(mt.molecules) == 32
    all_counts = census.diagram.counts(0.0)
    assert all_counts["morse_sum"] == 0 and all_counts["max"] > census.counts["max"]
