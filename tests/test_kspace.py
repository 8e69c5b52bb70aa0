"""Tests of the k-space residual analysis and correction (elfcore.kspace, elfcore.reproduce.kscans)."""
import math
import warnings

import numpy as np
import pytest

from elfcore import kspace as K
from elfcore.reproduce import kscans
from elfcore.errors import ElfcoreError, GridError
from elfcore.grid import grid_points_frac, make_field

CUBIC = np.eye(3) * 5.0
FCC_A = 4.0
FCC = 0.5 * FCC_A * np.array([[0.0, 1, 1], [1, 0, 1], [1, 1, 0]])
HEX = np.array([[3.0, 0, 0], [-1.5, 1.5 * math.sqrt(3), 0], [0, 0, 5.0]])
TRICLINIC = np.array([[5.1, 0.3, 0.2], [0.7, 4.6, 0.1], [-0.4, 0.9, 6.2]])


def brute_force_shells(cell, n, span=8, tol=1e-5):
    """|G| values and multiplicities of the first n non-zero shells by a plain triple loop."""
    B = 2 * np.pi * np.linalg.inv(cell).T
    ks = sorted(
        float(np.linalg.norm(np.array([i, j, k]) @ B))
        for i in range(-span, span + 1) for j in range(-span, span + 1) for k in range(-span, span + 1)
        if (i, j, k) != (0, 0, 0)
    )
    shells = []
    for k in ks:
        if shells and k - shells[-1][0] <= tol * k:
            shells[-1][1] += 1
        else:
            shells.append([k, 1])
    return shells[:n]


def smooth_pred(rng, shape, cell):
    """A predicted ELF in (0.05, 0.95) with structure at all k (not in the span of any low-k basis)."""
    z = rng.normal(size=shape)
    return make_field(0.05 + 0.9 / (1 + np.exp(-1.5 * z)), cell)


def perturbed_ref(pred, basis, coeffs):
    delta = K.synthesize(coeffs, basis)
    return make_field(K.sigmoid(K.logit(pred.values) + delta), pred.attrs["cell"])


# --------------------------------------------------------------------------- shells
def test_simple_cubic_shell_counts_and_order():
    b = K.lowk_basis(CUBIC, (16, 16, 16), n_shells=9)
    assert b.shell_counts.tolist() == [1, 6, 12, 8, 6, 24, 24, 12, 30, 24]
    np.testing.assert_allclose(b.shell_k * 5.0 / (2 * np.pi), np.sqrt([0, 1, 2, 3, 4, 5, 6, 8, 9, 10]), atol=1e-12)
    assert np.all(np.diff(b.k) >= 0) and np.all(np.diff(b.shell) >= 0)
    assert b.n_basis == 1 + sum(b.shell_counts[1:])


@pytest.mark.parametrize(
    "cell, counts",
    [
        (FCC, [8, 6, 12, 24, 8]),  # reciprocal of fcc is bcc: (111), (200), (220), (311), (222)
        (HEX, [2, 6, 2, 12]),  # ±c*, in-plane ring, ±2c*, ring ± c*  (a = 3, c = 5 Å)
        (TRICLINIC, [2, 2, 2, 2, 2]),  # point group -1 only
    ],
)
def test_shell_counts_follow_lattice_symmetry(cell, counts):
    b = K.lowk_basis(cell, (20, 20, 20), n_shells=len(counts))
    assert b.shell_counts[1:].tolist() == counts
    ref = brute_force_shells(cell, len(counts))
    assert [c for _, c in ref] == counts
    np.testing.assert_allclose(b.shell_k[1:], [k for k, _ in ref], rtol=1e-12)


def test_shells_do_not_depend_on_the_choice_of_cell_vectors():
    """A unimodular change of lattice basis is the same lattice: same shells."""
    U = np.array([[1, 0, 0], [1, 1, 0], [-2, 1, 1]])
    for cell in (CUBIC, HEX, TRICLINIC):
        _, k1, s1 = K.reciprocal_shells(cell, n_shells=6)
        _, k2, s2 = K.reciprocal_shells(U @ cell, n_shells=6)
        np.testing.assert_allclose(k1, k2, rtol=1e-10)
        assert s1.tolist() == s2.tolist()


def test_k_max_selects_whole_shells():
    k1 = 2 * np.pi / 5.0
    b = K.lowk_basis(CUBIC, (16, 16, 16), k_max=1.5 * k1)  # shells |m|² = 1, 2
    assert b.n_shells == 2 and b.shell_counts.tolist() == [1, 6, 12]
    assert b.k_last == pytest.approx(math.sqrt(2) * k1)
    b0 = K.lowk_basis(CUBIC, (16, 16, 16), k_max=0.5 * k1)
    assert b0.n_basis == 1 and b0.n_shells == 0 and b0.k_last == 0.0


def test_settings_validation():
    with pytest.raises(ValueError):
        K.KSpaceSettings(n_shells=2, k_max=1.0)
    with pytest.raises(ValueError):
        K.KSpaceSettings()
    with pytest.raises(ValueError):
        K.KSpaceSettings(n_shells=-1)
    with pytest.raises(ValueError):
        K.KSpaceSettings(n_shells=1, eps=0.7)
    s = K.KSpaceSettings(k_max=1.2, eps=1e-3)
    assert K.KSpaceSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError):
        K.KSpaceSettings.from_dict({"n_shells": 1, "kmax": 2})


def test_nyquist_limit_raises():
    with pytest.raises(GridError, match="Nyquist"):
        K.lowk_basis(CUBIC, (4, 4, 4), n_shells=4)  # shell 4 is m = (2, 0, 0) = Nyquist of N = 4
    K.lowk_basis(CUBIC, (5, 5, 5), n_shells=4)  # odd grid resolves |m| = 2


# --------------------------------------------------------------------------- basis
@pytest.mark.parametrize("cell, shape", [(CUBIC, (8, 8, 8)), (TRICLINIC, (9, 10, 12)), (HEX, (10, 10, 7))])
def test_basis_orthonormal_on_grid(cell, shape):
    b = K.lowk_basis(cell, shape, n_shells=4)
    A = K.basis_fields(b).reshape(b.n_basis, -1)
    np.testing.assert_allclose(A @ A.T / A.shape[1], np.eye(b.n_basis), atol=1e-12)


def test_project_is_least_squares_and_synthesize_inverts_it(rng):
    b = K.lowk_basis(TRICLINIC, (9, 10, 12), n_shells=5)
    d = rng.normal(size=b.shape)
    A = K.basis_matrix(b, grid_points_frac(b.shape))
    c = K.project(d, b)
    np.testing.assert_allclose(c, np.linalg.lstsq(A, d.reshape(-1), rcond=None)[0], atol=1e-12)
    np.testing.assert_allclose(K.synthesize(c, b).reshape(-1), A @ c, atol=1e-12)
    np.testing.assert_allclose(K.project(K.synthesize(c, b), b), c, atol=1e-12)


def test_parseval(rng):
    cell, shape = TRICLINIC, (9, 10, 12)
    d = make_field(rng.normal(size=shape) + 0.3, cell)
    spec = K.power_spectrum(d)
    assert float(spec["power"].sum()) == pytest.approx(float(np.mean(d.values**2)), rel=1e-12)
    assert int(spec["n_modes"].sum()) == d.size
    b = K.lowk_basis(cell, shape, n_shells=6)
    c = K.project(d, b)
    # energy of the projection in coefficient space equals its mean square on the grid
    assert float(np.sum(c**2)) == pytest.approx(float(np.mean(K.synthesize(c, b) ** 2)), rel=1e-12)
    # and the power spectrum at the selected modes is the same number
    info = K.low_k_fraction(d, k_cut=b.k_last * (1 + 1e-9))
    assert info["fraction"] * float(np.mean(d.values**2)) == pytest.approx(float(np.sum(c**2)), rel=1e-10)


def test_logit_clip():
    eps = 1e-4
    assert K.logit(0.0, eps) == pytest.approx(-math.log((1 - eps) / eps))
    assert K.logit(1.0, eps) == pytest.approx(math.log((1 - eps) / eps))
    z = np.linspace(-12, 12, 7)  # round trip limited by 1 - sigmoid(z) in float64 for large z
    np.testing.assert_allclose(K.logit(K.sigmoid(z), 1e-12), z, atol=1e-9)
    assert K.logit(K.sigmoid(np.array([15.0])), eps=1e-4)[0] == pytest.approx(math.log((1 - 1e-4) / 1e-4))
    with pytest.raises(ValueError):
        K.logit(0.3, eps=0.0)


# --------------------------------------------------------------------------- corrections
@pytest.mark.parametrize("cell, shape", [(CUBIC, (12, 12, 12)), (TRICLINIC, (11, 12, 13))])
def test_oracle_recovers_low_k_perturbation_exactly(rng, cell, shape):
    pred = smooth_pred(rng, shape, cell)
    b = K.lowk_basis(cell, shape, n_shells=3)
    c_true = 0.3 * rng.normal(size=b.n_basis)
    ref = perturbed_ref(pred, b, c_true)
    corrected, coeffs, info = K.oracle_correction(pred, ref, n_shells=3)
    np.testing.assert_allclose(coeffs.values, c_true, atol=1e-10)
    np.testing.assert_allclose(corrected.values, ref.values, atol=1e-12)
    assert info["r2_after"] == pytest.approx(1.0, abs=1e-12) and info["r2_before"] < 0.99
    assert info["n_basis"] == b.n_basis and info["captured_fraction"] == pytest.approx(1.0)
    assert coeffs.dims == ("basis",) and list(coeffs["shell"].values[:3]) == [0, 1, 1]
    # a truncated basis does not recover it
    _, _, info2 = K.oracle_correction(pred, ref, n_shells=2)
    assert info2["r2_before"] < info2["r2_after"] < 1 - 1e-6


def test_oracle_captured_fraction_is_low_k_power_of_residual(rng):
    cell, shape = HEX, (10, 10, 14)
    pred = smooth_pred(rng, shape, cell)
    ref = smooth_pred(rng, shape, cell)
    kmax = 2.6
    _, coeffs, info = K.oracle_correction(pred, ref, k_max=kmax)
    lk = K.low_k_fraction(K.logit_residual(pred, ref), k_cut=kmax)
    assert info["captured_fraction"] == pytest.approx(lk["fraction"], rel=1e-10)
    assert lk["n_modes"] == info["n_basis"] - 1 == 2 + 6 + 2  # first three HEX shells (1.26, 2.42, 2.51 Å⁻¹)
    assert float(coeffs["k"].max()) <= kmax


def test_oracle_raises_on_aliasing_basis():
    with pytest.raises(GridError):
        K.lowk_basis(CUBIC, (6, 6, 6), k_max=10.0)


def test_sparse_fit_recovers_low_k_perturbation(rng):
    cell, shape = TRICLINIC, (12, 12, 12)
    pred = smooth_pred(rng, shape, cell)
    b = K.lowk_basis(cell, shape, n_shells=3)
    c_true = 0.3 * rng.normal(size=b.n_basis)
    ref = perturbed_ref(pred, b, c_true)
    corrected, coeffs, info = K.sparse_correction(pred, ref, n_samples=3 * b.n_basis, seed=5, n_shells=3)
    np.testing.assert_allclose(coeffs.values, c_true, atol=1e-9)
    np.testing.assert_allclose(corrected.values, ref.values, atol=1e-9)
    assert info["ridge"] == 0.0 and info["condition_number"] < 100
    assert info["r2_after_unsampled"] == pytest.approx(1.0, abs=1e-12)
    # the same voxels given explicitly, as (M, 3) grid indices
    idx = np.random.default_rng(5).choice(pred.size, size=3 * b.n_basis, replace=False)
    ijk = np.stack(np.unravel_index(idx, shape), axis=1)
    _, c2, _ = K.sparse_correction(pred, ref, indices=ijk, basis=b)
    np.testing.assert_allclose(c2.values, c_true, atol=1e-9)


def test_sparse_fit_with_high_k_noise_approaches_oracle(rng):
    cell, shape = CUBIC, (16, 16, 16)
    pred = smooth_pred(rng, shape, cell)
    b = K.lowk_basis(cell, shape, n_shells=2)
    c_true = np.zeros(b.n_basis)
    c_true[1:] = 0.5 * rng.normal(size=b.n_basis - 1)
    ref_lowk = K.synthesize(c_true, b)
    noise = 0.05 * rng.normal(size=shape)
    ref = make_field(K.sigmoid(K.logit(pred.values) + ref_lowk + noise), cell)
    oracle = K.oracle_correction(pred, ref, basis=b).info
    few = K.sparse_correction(pred, ref, n_samples=40, seed=1, basis=b).info
    many = K.sparse_correction(pred, ref, n_samples=2000, seed=1, basis=b).info
    assert few["r2_after"] < many["r2_after"] <= oracle["r2_after"] + 1e-12
    assert oracle["r2_after"] - many["r2_after"] < 1e-3


def test_sparse_fit_guards_against_ill_conditioning(rng):
    cell, shape = CUBIC, (12, 12, 12)
    pred = smooth_pred(rng, shape, cell)
    ref = smooth_pred(rng, shape, cell)
    b = K.lowk_basis(cell, shape, n_shells=3)  # 27 functions
    with pytest.raises(K.IllConditionedError, match="27 basis functions"):
        K.sparse_correction(pred, ref, n_samples=10, seed=0, basis=b, ridge=0.0)
    assert issubclass(K.IllConditionedError, ElfcoreError)
    with pytest.warns(K.IllConditionedWarning):
        res = K.sparse_correction(pred, ref, n_samples=10, seed=0, basis=b)
    assert math.isinf(res.info["condition_number"]) and res.info["ridge"] > 0
    assert np.all(np.isfinite(res.corrected.values))
    # enough samples but all on one plane: cos/sin along c are indistinguishable → singular
    ijk = np.stack(np.meshgrid(np.arange(12), np.arange(12), [0], indexing="ij"), -1).reshape(-1, 3)
    with pytest.raises(K.IllConditionedError):
        K.sparse_correction(pred, ref, indices=ijk, basis=b, ridge=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = K.sparse_correction(pred, ref, n_samples=400, seed=0, basis=b)
    assert ok.info["ridge"] == 0.0 and ok.info["condition_number"] < 10


def test_mismatched_grids_raise(rng):
    a = smooth_pred(rng, (8, 8, 8), CUBIC)
    with pytest.raises(GridError):
        K.oracle_correction(a, smooth_pred(rng, (8, 8, 9), CUBIC), n_shells=1)
    with pytest.raises(GridError):
        K.oracle_correction(a, smooth_pred(rng, (8, 8, 8), CUBIC * 1.1), n_shells=1)


def test_float32_fields(rng):
    cell, shape = CUBIC, (10, 10, 10)
    pred64 = smooth_pred(rng, shape, cell)
    ref64 = smooth_pred(rng, shape, cell)
    pred32 = make_field(pred64.values.astype(np.float32), cell)
    ref32 = make_field(ref64.values.astype(np.float32), cell)
    a = K.oracle_correction(pred64, ref64, n_shells=2)
    b = K.oracle_correction(pred32, ref32, n_shells=2)
    assert b.corrected.dtype == np.float32
    assert b.info["r2_after"] == pytest.approx(a.info["r2_after"], abs=1e-5)


# --------------------------------------------------------------------------- analysis
def test_power_spectrum_and_low_k_fraction_of_known_field(rng):
    cell, shape = np.eye(3) * 10.0, (16, 16, 16)
    b = K.lowk_basis(cell, shape, n_shells=2)
    c = np.zeros(b.n_basis)
    c[0] = 0.5
    c[1:7] = rng.normal(size=6)  # shell 1: 6 vectors = 3 ±G pairs = 6 functions
    assert set(b.coords()["shell"][1][1:7]) == {1}
    hi = 0.1 * rng.normal(size=shape)
    f = make_field(K.synthesize(c, b) + hi - hi.mean(), cell)
    k1 = 2 * np.pi / 10.0
    info = K.low_k_fraction(f, k_cut=1.0)
    lowk = c[0] ** 2 + np.sum(c[1:7] ** 2)
    assert info["k_first"] == pytest.approx(k1)
    assert info["n_modes"] == 6 + 12  # |m|² = 1, 2 below 1 Å⁻¹ (0.63, 0.89); |m|² = 3 at 1.09
    spec = K.power_spectrum(f, dk=k1 / 2)
    assert float(spec["power"].sel(k=k1, method="nearest")) >= np.sum(c[1:7] ** 2)
    assert float(spec["power"][0]) == pytest.approx(c[0] ** 2, rel=1e-10)
    assert 0 < info["fraction_fluct"] < 1 and info["fraction"] > lowk / float(np.mean(f.values**2)) - 1e-12


def test_correlation_length_of_first_shell_field(rng):
    """Isotropic shell of |G| = k has C(r) = sin(kr)/(kr), which falls to 1/e at kr ≈ 2.1985."""
    L, shape = 10.0, (24, 24, 24)
    b = K.lowk_basis(np.eye(3) * L, shape, n_shells=1)
    c = np.zeros(b.n_basis)
    c[1:] = rng.normal(size=b.n_basis - 1)
    f = make_field(K.synthesize(c, b), np.eye(3) * L)
    assert K.correlation_length(f) == pytest.approx(2.1985 / (2 * np.pi / L), rel=0.02)
    ac = K.autocorrelation(f)
    assert ac.values[0] == pytest.approx(1.0) and ac.attrs["r_max"] == pytest.approx(L / 2)
    # white noise: correlation drops within one grid spacing
    g = make_field(rng.normal(size=shape), np.eye(3) * L)
    assert K.correlation_length(g) < L / 24


def test_residual_analysis_and_shell_scan(rng):
    cell, shape = TRICLINIC, (12, 12, 12)
    pred = smooth_pred(rng, shape, cell)
    b = K.lowk_basis(cell, shape, n_shells=2)
    c_true = 0.4 * rng.normal(size=b.n_basis)
    ref = perturbed_ref(pred, b, c_true)
    ra = kscans.residual_analysis(pred, ref, k_cut=b.k_last)
    assert ra["low_k_fraction"] == pytest.approx(1.0)
    assert ra["k_centroid"] <= b.k_last + 1e-12 and ra["cell_lengths"][2] == pytest.approx(np.linalg.norm(cell[2]))
    scan = kscans.shell_scan(pred, ref, shells=range(0, 5))
    assert scan["n_shells"].values.tolist() == [0, 1, 2, 3, 4]
    assert np.all(np.diff(scan["captured_fraction"].values) >= -1e-12)
    np.testing.assert_allclose(scan["r2_after"].values[2:], 1.0, atol=1e-12)
    one = K.oracle_correction(pred, ref, n_shells=1).info
    assert float(scan["r2_after"].sel(n_shells=1)) == pytest.approx(one["r2_after"], abs=1e-12)
    assert scan.attrs["r2_before"] == pytest.approx(one["r2_before"])


def test_sparse_scan_shape_and_trend(rng):
    cell, shape = CUBIC, (12, 12, 12)
    pred = smooth_pred(rng, shape, cell)
    b = K.lowk_basis(cell, shape, n_shells=1)
    c_true = 0.4 * rng.normal(size=b.n_basis)
    ref = make_field(K.sigmoid(K.logit(pred.values) + K.synthesize(c_true, b) + 0.1 * rng.normal(size=shape)), cell)
    ds = kscans.sparse_scan(pred, ref, shells=(1,), n_samples=(5, 30, 600), seed=3, repeats=2)
    assert ds["r2_after"].shape == (1, 3)
    assert int(ds["n_regularised"].sel(n_samples=5)[0]) == 2  # 5 < 7 basis functions
    r2 = ds["r2_after"].values[0]
    assert r2[2] > r2[1] and r2[2] <= float(ds["r2_oracle"][0]) + 1e-12


def test_ensemble_shell_scan(rng):
    cell, shape = CUBIC, (10, 10, 10)
    ref = smooth_pred(rng, shape, cell)
    preds = [smooth_pred(rng, shape, cell) for _ in range(3)]
    ds = kscans.ensemble_shell_scan(preds, ref, shells=range(3))
    assert ds["r2_after"].dims == ("member", "n_shells") and ds["r2_after"].shape == (3, 3)
    one = kscans.shell_scan(preds[1], ref, shells=range(3))
    np.testing.assert_allclose(ds["r2_after"].isel(member=1), one["r2_after"], atol=1e-14)
    assert float(ds["r2_before"][1]) == pytest.approx(one.attrs["r2_before"])


# --------------------------------------------------------------------------- command line
def _kcorrect(argv):
    from elfcore.cli import main

    return main(["kcorrect", *argv])


def test_kcorrect_command_json_and_out(rng, tmp_path, capsys):
    import json

    from elfcore.grid import field_atoms, make_case
    from elfcore.io import read_field, write_case, write_field

    cell, shape = HEX, (10, 10, 14)
    pred = make_field(smooth_pred(rng, shape, cell).values, cell, [[0.0, 0, 0]], [1])
    b = K.lowk_basis(cell, shape, n_shells=2)
    ref = perturbed_ref(pred, b, 0.3 * rng.normal(size=b.n_basis))
    case = tmp_path / "case.nc"
    write_case(make_case(field_atoms(pred), {"elf_ref": ref, "elf_pred": pred}), case)
    out = tmp_path / "corr.nc"
    assert _kcorrect([str(case), str(case), "--shells", "2", "--json", "--scan", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shell_scan"]["n_shells"][:3] == [0, 1, 2]
    assert info["shell_scan"]["r2_after"][2] == pytest.approx(1.0, abs=1e-9)
    assert len(info["sparse_scan"]["r2_after"]) == 3 and len(info["sparse_scan"]["r2_after"][0]) == 4
    for key in ("r2_before", "r2_after", "mae_before", "mae_after", "n_basis", "cell_lengths", "k_last"):
        assert key in info
    assert info["n_basis"] == b.n_basis and info["k_last"] == pytest.approx(b.k_last)
    assert info["r2_after"] == pytest.approx(1.0, abs=1e-9) and info["r2_before"] < 0.99
    np.testing.assert_allclose(read_field(out).values, ref.values, atol=1e-8)
    # separate files, sparse mode from a percentage, k_max selection
    write_field(pred, tmp_path / "pred.nc")
    write_field(ref, tmp_path / "ref.nc")
    argv = [str(tmp_path / "pred.nc"), str(tmp_path / "ref.nc"), "--kmax", "2.55", "--sample", "20%",
            "--seed", "4", "--json", "--analysis"]
    assert _kcorrect(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "sparse" and info["n_samples"] == 280 and info["n_basis"] == 11
    assert info["r2_after"] == pytest.approx(1.0, abs=1e-9)
    assert 0 <= info["residual"]["low_k_fraction"] <= 1 and info["residual_elf"]["space"] == "elf"


def test_kcorrect_predicts_when_pred_is_a_model(rng, tmp_path, capsys):
    import json

    from elfcore.descriptor import DescriptorSettings
    from elfcore.grid import field_atoms
    from elfcore.io import write_field
    from elfcore.models import save_model
    from elfcore.predict import predict_field
    from elfcore.reproduce.bench import timing_model
    from elfcore.train import metrics

    cell, shape = np.diag([3.0, 3.2, 3.4]), (8, 8, 8)
    ref = make_field(smooth_pred(rng, shape, cell).values, cell, rng.random((6, 3)) @ cell, [1] * 6)
    model = timing_model(DescriptorSettings(n_radial=3, l_max=1, r_cut=1.5), width=8, seed=1).eval()
    save_model(model, tmp_path / "m.safetensors")
    write_field(ref, tmp_path / "ref.nc")
    assert _kcorrect([str(tmp_path / "m.safetensors"), str(tmp_path / "ref.nc"), "--shells", "1",
                      "--device", "cpu", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    direct = predict_field(field_atoms(ref), model, shape=shape, device="cpu", progress=False).elf
    assert info["r2_before"] == pytest.approx(metrics(direct.values, ref.values)["r2"], abs=1e-6)
    assert info["n_basis"] == 3 and info["shell_counts"] == [1, 2]  # orthorhombic: ±c* first
