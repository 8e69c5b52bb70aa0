"""Tests of the ELF MLP, the stacked ensemble and pickle-free model files."""
import json

import pytest
import torch

from elfcore.descriptor import DescriptorSettings
from elfcore.errors import FormatError, SettingsMismatchError
from elfcore.models import MLP, Ensemble, ModelSettings, load_model, read_header, save_model

SETTINGS = DescriptorSettings(r_cut=2.0, n_radial=3, l_max=1)  # 12 features


def _model(seed=0, width=8):
    m = MLP(SETTINGS.n_features, width=width, hidden_layers=2)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    m.set_normalization(torch.linspace(-1, 1, SETTINGS.n_features), torch.linspace(0.5, 2, SETTINGS.n_features))
    m.descriptor_settings = SETTINGS
    m.metadata = {"seed": seed, "note": "test"}
    return m


def _x(n=7, seed=1):
    return torch.randn(n, SETTINGS.n_features, generator=torch.Generator().manual_seed(seed))


def test_paper_architecture_defaults():
    m = MLP(165)
    assert m.width == 128 and m.hidden_layers == 2
    assert [layer.out_features for layer in m.hidden] == [128, 128]
    assert m.model_settings == ModelSettings()


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"hidden_layers": 0}, {"width": 2.5}])
def test_settings_validation(kwargs):
    with pytest.raises(ValueError):
        MLP(10, **kwargs)
    with pytest.raises(ValueError):
        ModelSettings(**kwargs)


def test_model_settings_roundtrip_and_unknown_keys():
    s = ModelSettings(width=64, hidden_layers=3)
    assert ModelSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown"):
        ModelSettings.from_dict({"width": 3, "depth": 2})


def test_output_is_bounded_elf():
    m = _model()
    y = m(_x(200) * 50)
    assert y.shape == (200,)
    assert torch.all((y >= 0) & (y <= 1))


def test_normalization_is_applied():
    m = _model()
    x = _x()
    shifted = MLP(SETTINGS.n_features, width=8)
    shifted.load_state_dict(m.state_dict())
    shifted.set_normalization(torch.zeros(SETTINGS.n_features), torch.ones(SETTINGS.n_features))
    xs = (x - m.feature_shift) / m.feature_scale
    torch.testing.assert_close(shifted(xs), m(x))


def test_ensemble_members_roundtrip():
    members = [_model(s) for s in range(3)]
    e = Ensemble.from_members(members)
    x = _x()
    out = e(x)
    assert out.shape == (3, len(x))
    for i, m in enumerate(members):
        torch.testing.assert_close(out[i], m(x))
        torch.testing.assert_close(e.member(i)(x), m(x))
    mean, std = e.predict(x, SETTINGS)
    torch.testing.assert_close(mean, out.mean(0))
    torch.testing.assert_close(std, out.std(0, correction=0))
    assert torch.all(std > 0)


def test_ensemble_refuses_mixed_settings():
    a, b = _model(0), _model(1)
    b.descriptor_settings = DescriptorSettings(r_cut=2.5, n_radial=3, l_max=1)
    with pytest.raises(SettingsMismatchError):
        Ensemble.from_members([a, b])


def test_predict_refuses_other_descriptor_settings():
    m = _model()
    other = DescriptorSettings(r_cut=2.5, n_radial=3, l_max=1)  # same n_features, other r_cut
    assert other.n_features == SETTINGS.n_features
    with pytest.raises(SettingsMismatchError, match="r_cut"):
        m.predict(_x(), other)
    with pytest.raises(SettingsMismatchError, match="features"):
        m.predict(torch.zeros(3, SETTINGS.n_features + 1))
    assert m.predict(_x(), SETTINGS).shape == (7,)


def test_save_load_roundtrip_float32(tmp_path):
    m = _model()
    path = save_model(m, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert isinstance(loaded, MLP)
    assert loaded.descriptor_settings == SETTINGS
    assert loaded.metadata["seed"] == 0 and loaded.metadata["note"] == "test"
    x = _x()
    assert torch.equal(loaded(x), m(x))
    header = read_header(path)
    assert header["schema_version"] == 1
    assert header["model_class"] == "MLP"
    assert header["descriptor"] == SETTINGS.to_dict()
    assert header["model"] == {"n_features": 12, "width": 8, "hidden_layers": 2, "n_members": 1}
    assert "elfcore_version" in header


def test_save_load_float16_is_close_and_smaller(tmp_path):
    m = _model()
    p32 = save_model(m, tmp_path / "a.safetensors")
    p16 = save_model(m, tmp_path / "b.safetensors", weights_dtype="float16")
    assert p16.stat().st_size < p32.stat().st_size
    x = _x()
    torch.testing.assert_close(load_model(p16)(x), m(x), atol=2e-3, rtol=0)


def test_ensemble_file_roundtrip(tmp_path):
    e = Ensemble.from_members([_model(s) for s in range(4)])
    path = save_model(e, tmp_path / "e.safetensors")
    loaded = load_model(path)
    assert isinstance(loaded, Ensemble) and loaded.n_members == 4
    x = _x()
    assert torch.equal(loaded(x), e(x))


def test_load_refuses_other_settings(tmp_path):
    path = save_model(_model(), tmp_path / "m.safetensors")
    with pytest.raises(SettingsMismatchError):
        load_model(path, descriptor_settings=DescriptorSettings(r_cut=2.0, n_radial=3, l_max=2))
    load_model(path, descriptor_settings=SETTINGS)


def test_save_requires_settings(tmp_path):
    m = MLP(12, width=4)
    with pytest.raises(SettingsMismatchError):
        save_model(m, tmp_path / "m.safetensors")


def test_file_is_plain_safetensors_without_pickle(tmp_path):
    path = save_model(_model(), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8 : 8 + n])
    assert "elfcore" in head["__metadata__"]
    assert b"\x80\x02" not in raw[:2] and not raw.startswith(b"PK")  # neither a pickle nor a torch zip


def test_bad_files_raise_format_error(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(FormatError):
        load_model(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(FormatError, match="header"):
        load_model(foreign)
    path = save_model(_model(), tmp_path / "m.safetensors")
    header = read_header(path)
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    for change, match in [({"schema_version": 99}, "schema"), ({"model_class": "Pickle"}, "model_class")]:
        bad = tmp_path / "bad.safetensors"
        save_file(tensors, str(bad), metadata={"elfcore": json.dumps({**header, **change})})
        with pytest.raises(FormatError, match=match):
            load_model(bad)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.safetensors")


def test_no_global_seeding_in_package():
    import pathlib

    import elfcore

    root = pathlib.Path(elfcore.__file__).parent
    for name in ("models/mlp.py", "models/io.py", "train.py", "zoo.py"):
        text = (root / name).read_text()
        assert "torch.manual_seed(" not in text and "set_default_" not in text, name
