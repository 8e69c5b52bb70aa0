"""Tests of the shared minibatch fit loop (elfcore.fitting) and its use by the MLP and the CNN."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import elfcore.fitting as F
from elfcore.errors import ElfcoreError, SettingsError


@dataclass(frozen=True)
class Sched:
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 0.05
    lr_final_factor: float = 0.1


def _line_data(n=128, seed=0):
    """y = 2x − 1 + small noise: a least-squares problem with a known answer."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g) * 2 - 1
    return x, 2 * x - 1 + 0.01 * torch.randn(n, generator=g)


def _fit_line(seed, schedule=Sched(), n_streams=1, validate=None):
    x, y = _line_data()
    model = torch.nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()

    def batch_loss(idx):
        assert idx.shape[0] == n_streams and idx.dtype == torch.int64
        return F.huber_loss(model(x[idx].unsqueeze(-1)).squeeze(-1), y[idx], 1.0)

    gens = F.seed_generators(seed, n_streams)
    res = F.fit(model, batch_loss, len(x), schedule, generators=gens, validate=validate, progress=False)
    return model, res


def test_fit_solves_a_small_regression():
    model, res = _fit_line(0)
    losses = [r["train_loss"] for r in res.history]
    assert len(res.history) == 30 and [r["epoch"] for r in res.history] == list(range(1, 31))
    assert losses[-1] < 0.01 * losses[0]
    assert float(model.weight.detach()) == pytest.approx(2.0, abs=0.05)
    assert float(model.bias.detach()) == pytest.approx(-1.0, abs=0.05)
    assert res.steps == 30 * (128 // 16) and res.seconds >= 0
    assert not model.training  # left in eval mode


def test_fit_is_deterministic_with_a_seed():
    a, ra = _fit_line(3, Sched(epochs=3))
    b, rb = _fit_line(3, Sched(epochs=3))
    c, _ = _fit_line(4, Sched(epochs=3))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert ra.history == rb.history
    assert not torch.equal(a.weight, c.weight)


def test_fit_is_torch_adam_with_cosine_learning_rate():
    """Replaying the loop by hand with torch.optim.Adam gives the same weights."""
    sched = Sched(epochs=2, batch_size=40)
    model, _ = _fit_line(5, sched)
    x, y = _line_data()
    ref = torch.nn.Linear(1, 1)
    with torch.no_grad():
        ref.weight.zero_()
        ref.bias.zero_()
    opt = torch.optim.Adam(ref.parameters(), lr=sched.learning_rate)
    gen = torch.Generator().manual_seed(5)
    total, step = 2 * (128 // 40), 0
    for _ in range(sched.epochs):
        order = torch.randperm(128, generator=gen)
        for k in range(128 // 40):
            opt.param_groups[0]["lr"] = F.cosine_lr(step, total, sched.learning_rate,
                                                    sched.learning_rate * sched.lr_final_factor)
            idx = order[k * 40 : (k + 1) * 40]
            loss = torch.nn.functional.huber_loss(ref(x[idx, None]).squeeze(-1), y[idx], delta=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    torch.testing.assert_close(model.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.bias, ref.bias, rtol=0, atol=0)


def test_fit_streams_and_validation_records():
    seen = []

    def validate():
        seen.append(1)
        return {"val_r2": 0.5, "val_mae": 0.1}

    _, res = _fit_line(0, Sched(epochs=2), n_streams=2, validate=validate)
    assert len(seen) == 2
    assert res.history[-1]["val_r2"] == 0.5 and "train_loss" in res.history[-1]


def test_cosine_lr_and_huber_loss():
    assert F.cosine_lr(0, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert F.cosine_lr(5, 10, 1.0, 0.1) == pytest.approx(0.55)
    assert F.cosine_lr(10, 10, 1.0, 0.1) == pytest.approx(0.1)
    p = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    t = torch.zeros(2, 2)
    # rows (members) averaged over voxels, then summed; |error| 1 > δ: δ(|e| − δ/2)
    expect = np.mean([0.0, 0.1 * (1.0 - 0.05)]) + np.mean([0.0, 0.0])
    assert float(F.huber_loss(p, t, 0.1)) == pytest.approx(expect)
    assert float(F.huber_loss(p[0], t[0], 0.1)) == pytest.approx(expect)


def test_split_indices():
    val, tr = F.split_indices(10, 0.3, torch.Generator().manual_seed(0))
    assert len(val) == 3 and len(tr) == 7
    assert sorted(torch.cat([val, tr]).tolist()) == list(range(10))
    with pytest.raises(SettingsError, match="no training"):
        F.split_indices(1, 0.9, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"batch_size": 1.5}, {"learning_rate": float("nan")},
                                 {"lr_final_factor": 0.0}])
def test_fit_refuses_bad_schedules(bad):
    with pytest.raises(SettingsError) as info:
        _fit_line(0, Sched(**bad))
    assert isinstance(info.value, ElfcoreError) and isinstance(info.value, ValueError)


def test_train_settings_raise_settings_error():
    from elfcore.train import TrainSettings

    with pytest.raises(SettingsError):
        TrainSettings(batch_size=0)


# --------------------------------------------------------------------------- both models use the loop
@pytest.fixture
def fit_calls(monkeypatch):
    calls = []
    real = F.fit

    def spy(model, *args, **kwargs):
        calls.append(type(model).__name__)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(F, "fit", spy)
    return calls


def test_mlp_training_goes_through_the_shared_loop(fit_calls):
    from elfcore.descriptor import DescriptorSettings
    from elfcore.train import TrainSettings, train_model

    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 12, generator=g)
    y = torch.sigmoid(X[:, 0])
    ts = TrainSettings(epochs=2, batch_size=32, width=8)
    settings = DescriptorSettings(r_cut=2.0, n_radial=3, l_max=1)
    train_model(X, y, settings, ts, progress=False)
    train_model(X, y, settings, ts, n_members=2, progress=False)
    assert fit_calls == ["Ensemble", "Ensemble"]


def test_cnn_training_goes_through_the_shared_loop(fit_calls):
    from elfcore.models.cnn import CNN, PatchSettings, train_cnn
    from elfcore.train import TrainSettings

    g = torch.Generator().manual_seed(0)
    X = torch.rand(64, 4**3, generator=g)
    y = X.mean(1)
    m = train_cnn(X, y, PatchSettings(r_cut=1.0, patch_size=4), TrainSettings(epochs=2, batch_size=16),
                  channels=(2, 2, 2), progress=False)
    assert fit_calls == ["CNN"] and isinstance(m, CNN)
    assert len(m.metadata["history"]) == 2 and "val_r2" in m.metadata["history"][-1]
