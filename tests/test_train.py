"""Tests of voxel sampling, the descriptor cache, training, ensembles and metrics (elfcore.train).

All data here are tiny synthetic fields: an ELF-like smooth function of the
distances to the atoms, which a local descriptor can learn.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from elfcore.descriptor import DescriptorSettings, compute_descriptor
from elfcore.errors import GridError, StructureError
from elfcore.grid import field_atoms, field_from_atoms, grid_points_cart, grid_points_frac, make_case, minimum_image
from elfcore.models import Ensemble, MLP
import elfcore.train as T

SETTINGS = DescriptorSettings(r_cut=2.0, n_radial=3, l_max=1)  # 12 features, fast
SMALL = T.TrainSettings(n_voxels=600, epochs=4, batch_size=64, width=16, val_fraction=0.2)


def synthetic_field(seed: int, n_atoms: int = 6, n_grid: int = 10, length: float = 4.0):
    """ELF-like field 1 - exp(-Σ_i exp(-d_i²/2w²)) on a cubic cell with random H atoms."""
    rng = np.random.default_rng(seed)
    atoms = Atoms("H" * n_atoms, scaled_positions=rng.random((n_atoms, 3)), cell=[length] * 3, pbc=True)
    shape = (n_grid,) * 3
    pts = grid_points_frac(shape) @ np.asarray(atoms.cell[:])
    dens = np.zeros(len(pts))
    for p in atoms.get_positions():
        d = minimum_image(pts - p, atoms.cell[:])
        dens += np.exp(-np.sum(d * d, axis=1) / (2 * 0.45**2))
    values = 1.0 - np.exp(-1.5 * dens)
    return field_from_atoms(values.reshape(shape), atoms, attrs={"role": "train", "pressure_gpa": 100.0})


@pytest.fixture
def field():
    return synthetic_field(3)


# --------------------------------------------------------------------------- metrics
def test_metrics_hand_computed():
    m = T.metrics([0.0, 0.5, 1.0, 0.5], [0.0, 0.4, 1.0, 0.7])
    assert m["n_voxels"] == 4
    assert m["mae"] == pytest.approx(0.075)
    assert m["rmse"] == pytest.approx(np.sqrt((0.01 + 0.04) / 4))
    ref = np.array([0.0, 0.4, 1.0, 0.7])
    assert m["r2"] == pytest.approx(1 - 0.05 / np.sum((ref - ref.mean()) ** 2))


def test_metrics_perfect_and_tensor_input():
    y = torch.rand(100, generator=torch.Generator().manual_seed(0))
    m = T.metrics(y, y.clone())
    assert m == {"mae": 0.0, "rmse": 0.0, "r2": 1.0, "n_voxels": 100}
    assert T.metrics(torch.full((100,), float(y.mean())), y)["r2"] == pytest.approx(0.0, abs=1e-6)


def test_metrics_rejects_bad_input():
    with pytest.raises(ValueError):
        T.metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        T.metrics([], [])
    assert np.isnan(T.metrics([0.1, 0.2], [0.5, 0.5])["r2"])


# --------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    "atoms, match",
    [
        (Atoms("H2O", positions=[[0, 0, 0], [0.7, 0, 0], [0, 1, 0]], cell=[4] * 3, pbc=True), "O"),
        (Atoms(cell=[4] * 3, pbc=True), "no atoms"),
        (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]], cell=[4] * 3, pbc=True), "NaN"),
    ],
)
def test_bad_structures_refused(atoms, match):
    with pytest.raises(StructureError, match=match):
        T.check_structure(atoms)


def test_non_hydrogen_field_refused():
    atoms = Atoms("HLi", positions=[[0, 0, 0], [1, 1, 1]], cell=[4] * 3, pbc=True)
    f = field_from_atoms(np.zeros((4, 4, 4)), atoms)
    with pytest.raises(StructureError, match="hydrogen"):
        T.reference_field(f)
    with pytest.raises(StructureError):
        T.voxel_samples(f, SETTINGS, 10, seed=0, device="cpu")


def test_reference_field_from_case(field):
    atoms = field_atoms(field)
    case = make_case(atoms, {"elf_ref": field, "rho_ref": field * 2}, attrs={"role": "test"})
    ref = T.reference_field(case)
    np.testing.assert_array_equal(ref.values, field.values)
    assert ref.attrs["role"] == "test"
    with pytest.raises(GridError, match="elf_ref"):
        T.reference_field(make_case(atoms, {"rho_ref": field}))


# --------------------------------------------------------------------------- sampling
def test_sample_voxels_deterministic_and_distinct():
    a = T.sample_voxels((7, 8, 9), 300, seed=4)
    b = T.sample_voxels((7, 8, 9), 300, seed=4)
    c = T.sample_voxels((7, 8, 9), 300, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(torch.unique(a)) == 300 and int(a.min()) >= 0 and int(a.max()) < 7 * 8 * 9
    assert torch.equal(T.sample_voxels((2, 3, 4), 1000, seed=0), torch.arange(24))
    assert torch.equal(T.sample_voxels((2, 3, 4), None, seed=0), torch.arange(24))


def test_voxel_points_follow_grid_order(field):
    idx = torch.tensor([0, 5, 123, 999])
    np.testing.assert_allclose(
        T.voxel_points_cart(field.shape, idx, field.attrs["cell"]), grid_points_cart(field)[idx.numpy()]
    )


def test_voxel_samples_are_descriptor_and_reference(field):
    X, y, idx = T.voxel_samples(field, SETTINGS, 50, seed=2, device="cpu")
    assert X.shape == (50, SETTINGS.n_features) and X.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), field.values.reshape(-1)[idx.numpy()].astype(np.float32))
    direct = compute_descriptor(field_atoms(field), grid_points_cart(field)[idx.numpy()], SETTINGS, device="cpu")
    scale = float(direct.abs().max())
    torch.testing.assert_close(X, direct, rtol=0, atol=1e-5 * scale)  # fft path vs direct sum
    Xd, _, idx_d = T.voxel_samples(field, SETTINGS, 50, seed=2, device="cpu", method="direct")
    assert torch.equal(idx_d, idx)
    torch.testing.assert_close(Xd, direct)
    X16, _, idx16 = T.voxel_samples(field, SETTINGS, 50, seed=2, device="cpu", storage_dtype="float16")
    assert X16.dtype == torch.float16 and torch.equal(idx16, idx)
    torch.testing.assert_close(X16.float(), X, rtol=2e-3, atol=1e-6)


def test_descriptor_cache(field, tmp_path, monkeypatch):
    import elfcore.descriptor as D

    calls = []
    real = D.iter_grid_descriptor

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(D, "iter_grid_descriptor", counting)
    a = T.voxel_samples(field, SETTINGS, 40, seed=1, cache_dir=tmp_path, device="cpu")
    b = T.voxel_samples(field, SETTINGS, 40, seed=1, cache_dir=tmp_path, device="cpu")
    assert len(calls) == 1
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    T.voxel_samples(field, SETTINGS, 40, seed=2, cache_dir=tmp_path, device="cpu")
    T.voxel_samples(field, DescriptorSettings(r_cut=2.5, n_radial=3, l_max=1), 40, seed=1, cache_dir=tmp_path, device="cpu")
    changed = field.copy(data=field.values * 0.5)
    T.voxel_samples(changed, SETTINGS, 40, seed=1, cache_dir=tmp_path, device="cpu")
    assert len(calls) == 4
    assert len(list(Path(tmp_path).glob("*.safetensors"))) == 4


def test_cache_reuses_larger_lmax(field, tmp_path):
    big = DescriptorSettings(r_cut=2.0, n_radial=3, l_max=3)
    Xb, yb, ib = T.voxel_samples(field, big, 30, seed=1, cache_dir=tmp_path, device="cpu")
    X, y, idx = T.voxel_samples(field, SETTINGS, 30, seed=1, cache_dir=tmp_path, device="cpu")
    assert len(list(Path(tmp_path).glob("*.safetensors"))) == 1  # served from the l_max=3 file
    assert torch.equal(idx, ib) and torch.equal(y, yb)
    direct, _, _ = T.voxel_samples(field, SETTINGS, 30, seed=1, device="cpu")
    torch.testing.assert_close(X, direct, rtol=1e-5, atol=1e-5 * float(direct.abs().max()))


def test_memory_budget(field, monkeypatch):
    import elfcore.sampling as S

    monkeypatch.setattr(S, "MAX_DESCRIPTOR_BYTES", 1000)
    with pytest.raises(GridError, match="budget"):
        T.voxel_samples(field, SETTINGS, None, seed=0, device="cpu")


# --------------------------------------------------------------------------- training
def _toy_data(n=800, f=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.1, 10, f)
    z = torch.randn(n, f, generator=g)
    y = torch.sigmoid(2 * z[:, 0] - z[:, 1] + 0.5 * z[:, 2] ** 2 - 0.5)
    X = z * scale  # features of very different scales: the model standardises them
    return X, y


def test_training_is_deterministic_on_cpu():
    X, y = _toy_data()
    a = T.train_model(X, y, SETTINGS, SMALL, seed=7, progress=False)
    b = T.train_model(X, y, SETTINGS, SMALL, seed=7, progress=False)
    c = T.train_model(X, y, SETTINGS, SMALL, seed=8, progress=False)
    assert isinstance(a, MLP)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.output.weight, c.output.weight)
    assert a.metadata["history"] == b.metadata["history"]


def test_training_learns_and_records_history():
    X, y = _toy_data(2000)
    m = T.train_model(X, y, SETTINGS, T.TrainSettings(epochs=40, batch_size=64, width=32, val_fraction=0.2),
                      seed=0, progress=False)
    hist = m.metadata["history"]
    assert len(hist) == 40 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["val_r2"] > 0.95
    assert m.metadata["n_val_voxels"] == 400 and m.metadata["n_train_voxels"] == 1600
    assert m.descriptor_settings == SETTINGS
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_training_rejects_mismatched_input():
    X, y = _toy_data()
    with pytest.raises(ValueError, match="features"):
        T.train_model(X[:, :5], y, SETTINGS, SMALL, progress=False)
    with pytest.raises(ValueError):
        T.train_model(X, y[:10], SETTINGS, SMALL, progress=False)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"huber_delta": 0.0}, {"val_fraction": 1.0}, {"storage_dtype": "int8"}])
def test_train_settings_validation(bad):
    with pytest.raises(ValueError):
        T.TrainSettings(**bad)


def test_train_settings_roundtrip():
    s = T.TrainSettings(epochs=3, storage_dtype="float16")
    assert T.TrainSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown"):
        T.TrainSettings.from_dict({"epoch": 3})
    d = T.TrainSettings()
    assert (d.n_voxels, d.epochs, d.huber_delta, d.width, d.hidden_layers) == (50_000, 80, 0.03, 128, 2)


def test_ensemble_members_are_single_models_with_shifted_seeds():
    X, y = _toy_data()
    e = T.train_model(X, y, SETTINGS, SMALL, seed=5, n_members=3, progress=False)
    assert isinstance(e, Ensemble) and e.n_members == 3
    single = T.train_model(X, y, SETTINGS, SMALL, seed=6, split_seed=5, progress=False)
    torch.testing.assert_close(e.member(1)(X), single(X), atol=1e-5, rtol=0)
    mean, std = e.predict(X, SETTINGS)
    assert mean.shape == std.shape == (len(X),)
    assert float(std.mean()) > 0


# --------------------------------------------------------------------------- end to end
def test_train_on_fields_and_evaluate(tmp_path):
    train = [("a", synthetic_field(1)), ("b", synthetic_field(2))]
    ts = T.TrainSettings(n_voxels=700, epochs=25, batch_size=64, width=32, val_fraction=0.1)
    model = T.train_on_fields(train, SETTINGS, ts, seed=0, cache_dir=tmp_path, device="cpu", progress=False)
    assert [c["name"] for c in model.metadata["training_cases"]] == ["a", "b"]
    assert model.metadata["training_cases"][0]["role"] == "train"
    test = [("c", synthetic_field(9))]
    report = T.evaluate_many(model, train + test, n_voxels=500, seed=1, cache_dir=tmp_path, device="cpu")
    assert [r["name"] for r in report["cases"]] == ["a", "b", "c"]
    assert report["overall"]["n_voxels"] == 1500
    for row in report["cases"]:
        assert set(row) >= {"name", "mae", "rmse", "r2", "n_voxels"}
    assert report["cases"][0]["r2"] > 0.9
    assert report["cases"][2]["r2"] > 0.7  # unseen structure: a local descriptor transfers
    json.dumps(report)


def test_evaluate_ensemble_reports_member_spread(tmp_path):
    train = [("a", synthetic_field(1))]
    ts = T.TrainSettings(n_voxels=500, epochs=3, batch_size=64, width=16)
    e = T.train_on_fields(train, SETTINGS, ts, seed=0, n_members=3, device="cpu", progress=False)
    row = T.evaluate_field(e, synthetic_field(2), n_voxels=300, device="cpu")
    assert row["n_members"] == 3 and row["r2_std"] > 0 and row["mae_std"] > 0
    assert set(row["ensemble_mean"]) == {"mae", "rmse", "r2", "n_voxels"}
    assert row["mean_member_std"] > 0


def test_model_file_roundtrip_keeps_predictions(tmp_path):
    from elfcore.models import load_model, save_model

    X, y = _toy_data()
    m = T.train_model(X, y, SETTINGS, SMALL, seed=0, progress=False)
    loaded = load_model(save_model(m, tmp_path / "m.safetensors"))
    assert torch.equal(loaded(X), m(X))
    assert loaded.metadata["history"] == m.metadata["history"]


# --------------------------------------------------------------------------- command line
def _write_cases(tmp_path):
    from elfcore.grid import field_atoms
    from elfcore.io import write_case, write_field

    paths = []
    for seed, role in [(1, "train"), (2, "train"), (9, "test")]:
        f = synthetic_field(seed)
        case = make_case(field_atoms(f), {"elf_ref": f}, attrs={"role": role, "pressure_gpa": 100.0 + seed})
        p = tmp_path / f"case{seed}.nc"
        write_case(case, p)
        paths.append(str(p))
    cube = tmp_path / "other.cube"
    write_field(synthetic_field(11).rename("elf"), cube)
    return paths, str(cube)


def test_cli_train_evaluate_json(tmp_path, capsys):
    from elfcore.cli import main

    paths, cube = _write_cases(tmp_path)
    model = tmp_path / "m.safetensors"
    common = ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    rc = main(["train", *paths, "--role", "train", "--rcut", "2.0", "--nradial", "3", "--lmax", "1",
               "--epochs", "20", "--voxels", "700", "--batch-size", "64", "--width", "32", "--out", str(model),
               "--json", *common])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in summary["training_cases"]] == ["case1", "case2"]
    assert summary["descriptor"]["r_cut"] == 2.0 and model.exists()
    rc = main(["evaluate", str(model), *paths, cube, "--voxels", "400", "--json", *common])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in report["cases"]] == ["case1", "case2", "case9", "other"]
    for row in report["cases"] + [report["overall"]]:
        assert {"mae", "rmse", "r2", "n_voxels"} <= set(row)
    assert report["overall"]["n_voxels"] == 1600
    assert report["cases"][0]["r2"] > 0.9
    rc = main(["evaluate", str(model), paths[2], "--voxels", "0", *common])
    out = capsys.readouterr().out
    assert rc == 0 and "case9" in out and "overall" in out and "1000" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    from elfcore.cli import main
    from elfcore.grid import field_atoms
    from elfcore.io import write_case

    f = synthetic_field(1)
    atoms = field_atoms(f)
    atoms.numbers[0] = 8
    bad = tmp_path / "water.nc"
    write_case(make_case(atoms, {"elf_ref": f.values}), bad)
    rc = main(["train", str(bad), "--out", str(tmp_path / "m.safetensors"), "--no-cache", "--device", "cpu",
                "--species", "H"])
    err = capsys.readouterr().err
    assert rc == 1 and "O" in err and "hydrogen" in err
    rc = main(["evaluate", "zoo:rcut=9,lmax=2", str(bad)])
    assert rc == 1 and "r_cut" in capsys.readouterr().err


def test_feature_masked_members_cut_down_exactly():
    X, y = _toy_data(600, f=12)
    masks = torch.zeros(2, 12, dtype=torch.bool)
    masks[0, :4] = True
    masks[1, :] = True
    e = T.train_model(X, y, SETTINGS, SMALL, seed=0, n_members=2, feature_masks=masks, progress=False)
    small = DescriptorSettings(r_cut=2.0, n_radial=1, l_max=3)  # 4 features
    m0 = T.masked_member(e, 0, range(4), small)
    assert m0.n_features == 4 and m0.descriptor_settings == small
    masked_in = torch.where(masks[0], X, e.feature_shift)
    torch.testing.assert_close(m0(X[:, :4]), e(masked_in)[0], atol=1e-6, rtol=0)
    # the masked member ignores the hidden features entirely
    X2 = X.clone()
    X2[:, 4:] = 123.0
    torch.testing.assert_close(m0(X2[:, :4]), m0(X[:, :4]))
    assert len(e.metadata["history"][-1]["val_r2_members"]) == 2
    with pytest.raises(ValueError, match="feature_masks"):
        T.train_model(X, y, SETTINGS, SMALL, n_members=2, feature_masks=masks[:1], progress=False)


def test_training_steps_are_torch_optim_adam(monkeypatch):
    """The fit loop's optimiser is torch.optim.Adam (β = (0.9, 0.999), ε = 1e-8), one instance per run."""
    import elfcore.fitting as F

    made = []
    real = torch.optim.Adam

    class Spy(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(F.torch.optim, "Adam", Spy)
    X, y = _toy_data()
    m = T.train_model(X, y, SETTINGS, SMALL, seed=0, progress=False)
    assert len(made) == 1
    group = made[0].param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8 and group["weight_decay"] == 0
    steps = m.metadata["n_train_voxels"] // SMALL.batch_size * SMALL.epochs
    lr1 = SMALL.learning_rate * SMALL.lr_final_factor
    assert group["lr"] == pytest.approx(F.cosine_lr(steps - 1, steps, SMALL.learning_rate, lr1))  # cosine decay
