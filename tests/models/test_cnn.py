"""Tests of the 3D-CNN alternative (elfcore.models.cnn)."""
import numpy as np
import pytest
import torch
from ase import Atoms

from elfcore.errors import FormatError, SettingsMismatchError, StructureError
from elfcore.models.cnn import CNN, CNNSettings, PatchSettings, compute_patches, load_cnn, patch_axis, save_cnn


def _direct_patch(atoms, r0, settings, n_img=3):
    """Reference: explicit loops over atoms and a generous block of periodic images."""
    u = patch_axis(settings)
    gx, gy, gz = np.meshgrid(u, u, u, indexing="ij")
    out = np.zeros(gx.shape)
    cell = np.asarray(atoms.cell[:])
    rng = range(-n_img, n_img + 1)
    for R in atoms.get_positions():
        for i in rng:
            for j in rng:
                for k in rng:
                    d = R + i * cell[0] + j * cell[1] + k * cell[2] - r0
                    if np.linalg.norm(d) <= settings.r_cut:
                        out += np.exp(-((gx - d[0]) ** 2 + (gy - d[1]) ** 2 + (gz - d[2]) ** 2) / (2 * settings.sigma**2))
    return out


def _triclinic(rng, n=6):
    cell = np.array([[3.1, 0.0, 0.0], [0.9, 2.8, 0.0], [-0.6, 0.7, 3.3]])
    return Atoms("H" * n, scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)


def test_settings_validate_and_round_trip():
    s = PatchSettings(r_cut=1.5, patch_size=8, sigma=0.3)
    assert PatchSettings.from_dict(s.to_dict()) == s
    assert s.n_features == 512
    with pytest.raises(ValueError, match="r_cut"):
        PatchSettings(r_cut=-1)
    with pytest.raises(ValueError, match="patch_size"):
        PatchSettings(patch_size=1)
    with pytest.raises(ValueError, match="unknown"):
        PatchSettings.from_dict({"r_cut": 1.0, "bogus": 2})
    with pytest.raises(ValueError, match="channels"):
        CNNSettings(channels=(4, 8))
    assert CNNSettings.from_dict(CNNSettings().to_dict()) == CNNSettings()


@pytest.mark.parametrize("r_cut", [1.0, 2.5])
def test_patch_matches_direct_evaluation_triclinic(rng, r_cut):
    atoms = _triclinic(rng)
    s = PatchSettings(r_cut=r_cut, patch_size=7, sigma=0.3)
    pts = rng.random((5, 3)) @ atoms.cell[:] + rng.normal(scale=4.0, size=(5, 3))  # any image
    got = compute_patches(atoms, pts, s, device="cpu", dtype=torch.float64, chunk_size=2).numpy()
    for p, g in zip(pts, got):
        ref = _direct_patch(atoms, p, s)
        np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12)
    assert got.max() > 0  # at least one neighbour was seen


def test_patch_small_cell_many_images(rng):
    """Cell much smaller than 2·r_cut: many periodic images of each atom count."""
    atoms = Atoms("HH", positions=[[0.1, 0.2, 0.3], [0.9, 0.8, 0.6]], cell=np.diag([1.3, 1.4, 1.2]), pbc=True)
    s = PatchSettings(r_cut=2.0, patch_size=5, sigma=0.4)
    pts = rng.random((3, 3)) * 2
    got = compute_patches(atoms, pts, s, device="cpu", dtype=torch.float64).numpy()
    for p, g in zip(pts, got):
        np.testing.assert_allclose(g, _direct_patch(atoms, p, s, n_img=4), rtol=1e-10, atol=1e-12)


def test_rotation_90_rotates_patch(rng):
    L = 4.0
    frac = rng.random((10, 3))
    atoms = Atoms("H" * 10, scaled_positions=frac, cell=np.eye(3) * L, pbc=True)
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90° about z: (x,y)->(-y,x)
    atoms_r = Atoms("H" * 10, positions=atoms.get_positions() @ rot.T, cell=(np.eye(3) * L) @ rot.T, pbc=True)
    s = PatchSettings(r_cut=1.6, patch_size=8, sigma=0.3)
    pts = rng.random((4, 3)) * L
    p = compute_patches(atoms, pts, s, device="cpu", dtype=torch.float64)
    pr = compute_patches(atoms_r, pts @ rot.T, s, device="cpu", dtype=torch.float64)
    # node (i, j, k) at (u_i, u_j, u_k) maps to (-u_j, u_i, u_k) = node (P-1-j, i, k)
    P = s.patch_size
    expected = torch.empty_like(p)
    i, j, k = np.meshgrid(np.arange(P), np.arange(P), np.arange(P), indexing="ij")
    expected[:, P - 1 - j, i, k] = p[:, i, j, k]
    torch.testing.assert_close(pr, expected, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(pr, p)  # the patch really changed (test can fail)


def test_empty_and_bad_input(rng):
    s = PatchSettings(patch_size=4)
    empty = Atoms(cell=np.eye(3) * 3, pbc=True)
    assert compute_patches(empty, np.zeros((2, 3)), s, device="cpu").abs().sum() == 0
    assert compute_patches(_triclinic(rng), np.zeros((0, 3)), s, device="cpu").shape == (0, 4, 4, 4)
    with pytest.raises(StructureError, match="hydrogen"):
        compute_patches(Atoms("HeH", positions=[[0, 0, 0], [1, 0, 0]], cell=np.eye(3) * 3, pbc=True), np.zeros((1, 3)), s, device="cpu")


def test_forward_in_unit_interval_and_shapes():
    torch.manual_seed(0)
    m = CNN(12, channels=(4, 4, 4))
    m.set_normalization(0.5, 0.01)  # huge logits: sigmoid must still be within [0, 1]
    x = torch.rand(16, 12, 12, 12) * 5
    y = m(x)
    assert y.shape == (16,)
    assert torch.all((y >= 0) & (y <= 1))
    torch.testing.assert_close(m(x.reshape(16, -1)), y)
    with pytest.raises(SettingsMismatchError):
        m.predict(torch.zeros(2, 10))


def test_save_load_round_trip(tmp_path, rng):
    torch.manual_seed(1)
    s = PatchSettings(r_cut=1.0, patch_size=6, sigma=0.25)
    m = CNN(6, channels=(3, 4, 5))
    m.set_normalization(0.2, 0.7)
    m.descriptor_settings = s
    m.metadata = {"epochs": 3, "seed": 7}
    path = save_cnn(m, tmp_path / "cnn.safetensors")
    m2 = load_cnn(path, descriptor_settings=s)
    x = torch.rand(5, 6, 6, 6)
    torch.testing.assert_close(m2(x), m.eval()(x))
    assert m2.descriptor_settings == s and m2.channels == (3, 4, 5)
    assert m2.metadata["seed"] == 7
    with pytest.raises(SettingsMismatchError):
        load_cnn(path, descriptor_settings=PatchSettings(r_cut=1.5, patch_size=6))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(FormatError):
        load_cnn(bad)
    m.descriptor_settings = None
    with pytest.raises(SettingsMismatchError):
        save_cnn(m, tmp_path / "x.safetensors")


def test_train_cnn_learns_and_is_deterministic(rng):
    """A tiny synthetic task: the ELF-like target is a smooth function of the local density."""
    from elfcore.grid import make_field
    from elfcore.models.cnn import cnn_voxel_samples, predict_cnn_points, train_cnn
    from elfcore.train import TrainSettings, metrics

    torch.set_num_threads(1)
    L = 3.0
    atoms = Atoms("H" * 6, scaled_positions=rng.random((6, 3)), cell=np.eye(3) * L, pbc=True)
    s = PatchSettings(r_cut=1.0, patch_size=6, sigma=0.3)
    shape = (10, 10, 10)
    pts = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1).reshape(-1, 3) * L
    dens = compute_patches(atoms, pts, s, device="cpu").reshape(len(pts), -1).mean(1).numpy()
    target = 1.0 / (1.0 + np.exp(-(dens - dens.mean()) / dens.std()))
    field = make_field(target.reshape(shape), atoms.cell[:], atoms.get_positions())
    X, y, idx = cnn_voxel_samples(field, s, 600, seed=3, device="cpu")
    assert X.shape == (600, 216)
    np.testing.assert_allclose(y.numpy(), target[idx.numpy()], rtol=1e-6)
    ts = TrainSettings(epochs=15, batch_size=32, learning_rate=3e-3, val_fraction=0.2)
    m1 = train_cnn(X, y, s, ts, channels=(2, 4, 4), seed=5, progress=False)
    m2 = train_cnn(X, y, s, ts, channels=(2, 4, 4), seed=5, progress=False)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    pred = predict_cnn_points(m1, atoms, pts, chunk_size=333)
    assert m1.metadata["history"][-1]["val_r2"] > 0.8
    assert metrics(pred, target)["r2"] > 0.8
