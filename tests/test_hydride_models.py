"""Hydride models everywhere a structure goes (issue #24): `elfcore train --species`, zoo:hydrides,
the automatic model choice, and `predict` / `netval` / `screen` with `--model auto`.

Everything runs on a tiny synthetic H3S case (the Im-3m prototype, 8 atoms, a smooth fake ELF on a
10³ grid) and a tiny model trained on it through the command line in a few seconds.
"""
import contextlib
import io
import json
import logging

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

import elfcore.zoo as Z
from elfcore.cli import main
from elfcore.commands.train import default_compression, resolve_species
from elfcore.descriptor import DescriptorSettings
from elfcore.errors import ElfcoreError, SettingsError, StructureError
from elfcore.grid import field_from_atoms, grid_points_frac, make_case, minimum_image
from elfcore.io import write_case
from elfcore.reference.hydrides import prototype

#: tiny descriptor and schedule of every model trained here
TINY = ["--rcut", "2.0", "--nradial", "2", "--lmax", "1", "--epochs", "2", "--voxels", "300",
        "--batch-size", "64", "--width", "8", "--no-cache", "--device", "cpu"]


def fake_elf(atoms, n_grid: int = 10):
    """A smooth ELF-like field: high near the H atoms, a little bump on the other atoms."""
    shape = (n_grid,) * 3
    pts = grid_points_frac(shape) @ np.asarray(atoms.cell[:])
    h_dens = np.zeros(len(pts))
    other = np.zeros(len(pts))
    for z, p in zip(atoms.numbers, atoms.get_positions()):
        d = minimum_image(pts - p, atoms.cell[:])
        g = np.exp(-np.sum(d * d, axis=1) / (2 * 0.45**2))
        if z == 1:
            h_dens += g
        else:
            other += g
    values = 0.85 * (1.0 - np.exp(-1.5 * h_dens)) + 0.1 * (1.0 - np.exp(-other))
    return field_from_atoms(values.reshape(shape), atoms, attrs={"role": "train", "pressure_gpa": 150.0})


def write_reference(atoms, path):
    write_case(make_case(atoms, {"elf_ref": fake_elf(atoms)}, attrs={"role": "train"}), path)
    return str(path)


def train(argv):
    """`elfcore train ... --json` through the command line: (exit code, summary or None, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["train", *argv, "--json"])
    return rc, (json.loads(out.getvalue()) if rc == 0 else None), err.getvalue()


def hydrogen_atoms(seed: int = 0) -> Atoms:
    rng = np.random.default_rng(seed)
    return Atoms("H8", scaled_positions=rng.random((8, 3)), cell=[3.2] * 3, pbc=True)


@pytest.fixture(scope="module")
def h3s():
    return prototype("h3s")


@pytest.fixture(scope="module")
def work(tmp_path_factory, h3s):
    """Folders: ``data`` (the H3S case, its POSCAR), ``zoo`` (the trained model as elf_mlp_hydrides)."""
    root = tmp_path_factory.mktemp("hydrides")
    (root / "zoo").mkdir()
    case = write_reference(h3s, root / "h3s.nc")
    write(root / "POSCAR", h3s, format="vasp")
    rc, summary, err = train([case, "--species", "auto", *TINY, "--out", str(root / "zoo" / Z.HYDRIDE_MODEL)])
    assert rc == 0, err
    return {"root": root, "case": case, "zoo": root / "zoo", "model": root / "zoo" / Z.HYDRIDE_MODEL,
            "poscar": root / "POSCAR", "summary": summary}


@pytest.fixture
def zoo_env(work, monkeypatch):
    """Point ELFCORE_ZOO_DIR at the folder holding the trained zoo:hydrides."""
    monkeypatch.setenv("ELFCORE_ZOO_DIR", str(work["zoo"]))
    return work["zoo"]


# ------------------------------------------------------------------------------------------- training
def test_train_species_auto_describes_every_element_of_the_data(work):
    summary = work["summary"]
    assert summary["species"] == ["H", "S"]
    assert summary["descriptor"]["species"] == ["H", "S"]
    assert "compression" not in summary["descriptor"]  # one element besides H: "off"
    assert Z.model_species(work["model"]) == ("H", "S")
    assert Z.resolve_model(Z.HYDRIDE_SPEC, directory=work["zoo"]).descriptor_settings == DescriptorSettings(
        r_cut=2.0, n_radial=2, l_max=1, species=("S", "H"))


def test_train_explicit_species_must_cover_the_data(work, tmp_path):
    out = tmp_path / "m.safetensors"
    rc, _, err = train([work["case"], "--species", "H,La", *TINY, "--out", str(out)])
    assert rc == 1 and not out.exists()
    assert "--species H,La does not cover S" in err and "h3s" in err and "Traceback" not in err
    rc, _, err = train([work["case"], "--species", "H,Xx", *TINY, "--out", str(out)])
    assert rc == 1 and "'Xx' is not a chemical symbol" in err and not out.exists()
    rc, _, err = train([work["case"], "--compression", "bogus", *TINY, "--out", str(out)])
    assert rc == 1 and "mu1nu1" in err and not out.exists()


def test_train_explicit_species_and_compression_are_used(work, tmp_path):
    rc, summary, err = train([work["case"], "--species", "La,S,H", "--compression", "crossover", *TINY,
                              "--out", str(tmp_path / "m.safetensors")])
    assert rc == 0, err
    assert summary["descriptor"]["species"] == ["H", "S", "La"]
    assert summary["descriptor"]["compression"] == "crossover"


def test_hydrogen_training_keeps_the_hydrogen_settings_dict(tmp_path):
    case = write_reference(hydrogen_atoms(), tmp_path / "h.nc")
    expected = DescriptorSettings(r_cut=2.0, n_radial=2, l_max=1, sigma=0.5).to_dict()
    assert set(expected) == set(DescriptorSettings().to_dict()) == {"r_cut", "n_radial", "l_max", "sigma"}
    for species in ("auto", "H"):
        rc, summary, err = train([case, "--species", species, *TINY, "--out", str(tmp_path / f"{species}.st")])
        assert rc == 0, err
        assert summary["descriptor"] == expected
        assert summary["species"] == ["H"]


def test_species_and_compression_defaults():
    found = {"H": ["a", "b"], "Y": ["b"], "La": ["a"]}
    assert resolve_species("auto", found) == ("H", "Y", "La")
    assert resolve_species("auto", {"H": ["a"]}) == ("H",)
    assert resolve_species("La, H, Y, S", found) == ("H", "S", "Y", "La")
    with pytest.raises(SettingsError, match=r"does not cover Y, La .*Y in b; La in a"):
        resolve_species("H", found)
    with pytest.raises(SettingsError, match="must include 'H'"):
        resolve_species("La,Y", found)
    assert default_compression(("H",)) == "off"
    assert default_compression(("H", "La")) == "off"
    assert default_compression(("H", "Y", "La")) == "mu1nu1"


def test_descriptor_cache_keys_on_species_and_compression(h3s, tmp_path):
    from elfcore.sampling import _cache_name, voxel_samples

    field = fake_elf(h3s, n_grid=6)
    base = DescriptorSettings(r_cut=2.0, n_radial=2, l_max=1, species=("H", "S"))
    variants = [base, DescriptorSettings(r_cut=2.0, n_radial=2, l_max=1, species=("H", "S"), compression="mu1nu1"),
                DescriptorSettings(r_cut=2.0, n_radial=2, l_max=1, species=("H", "S", "La"))]
    names = {_cache_name(field, s, 50, 0, "float32", "fft") for s in variants}
    assert len(names) == len(variants)
    # a cached "off" sample is not handed out for "mu1nu1" or for more species
    for s in variants:
        X, _, _ = voxel_samples(field, s, 50, seed=0, cache_dir=tmp_path, device="cpu")
        assert X.shape == (50, s.n_features)
    assert len(list(tmp_path.glob("desc-*.safetensors"))) == len(variants)
    with pytest.raises(StructureError, match="S"):  # the hydrogen descriptor still refuses the hydride
        voxel_samples(field, DescriptorSettings(r_cut=2.0, n_radial=2, l_max=1), 50, seed=0, device="cpu")


# ------------------------------------------------------------------------------------ the model choice
def test_choose_model_picks_zoo_hydrides_for_its_elements(work, h3s):
    choice = Z.choose_model(h3s, directory=work["zoo"])
    assert choice == Z.ModelChoice(Z.HYDRIDE_SPEC, "chosen for H, S")
    assert Z.choose_model(["S", "H", "H"], "auto", directory=work["zoo"]).spec == Z.HYDRIDE_SPEC
    assert Z.choose_model([16], directory=work["zoo"]).spec == Z.HYDRIDE_SPEC


def test_choose_model_picks_the_hydrogen_default_for_pure_hydrogen(work):
    assert Z.parse_spec(Z.DEFAULT_SPEC) == Z.DEFAULT and Z.parse_spec(Z.BASELINE_SPEC) == Z.BASELINE
    choice = Z.choose_model(hydrogen_atoms(), directory=work["zoo"])
    assert choice == Z.ModelChoice(Z.DEFAULT_SPEC, "chosen for H")


def test_choose_model_refuses_an_element_no_model_knows(work):
    yh6 = prototype("yh6")
    with pytest.raises(StructureError) as info:
        Z.choose_model(yh6, directory=work["zoo"])
    msg = str(info.value)
    assert msg.startswith("the structure holds Y, which no model knows")
    assert "zoo:hydrides covers H, S" in msg and "covers H" in msg and "39" not in msg
    with pytest.raises(StructureError, match="holds Y, La"):
        Z.choose_model(["H", "S", "La", "Y"], directory=work["zoo"])


def test_choose_model_says_zoo_hydrides_is_not_built(tmp_path, h3s):
    with pytest.raises(StructureError, match=r"holds S, which no model knows: zoo:hydrides is not built yet"):
        Z.choose_model(h3s, directory=tmp_path)
    with pytest.raises(ElfcoreError, match=r"not built yet.*assets/README\.md"):
        Z.resolve_model(Z.HYDRIDE_SPEC, directory=tmp_path)
    assert Z.choose_model(hydrogen_atoms(), directory=tmp_path).spec == Z.DEFAULT_SPEC


def test_choose_model_keeps_a_given_model(work, h3s):
    assert Z.choose_model(h3s, "some/model.safetensors", directory=work["zoo"]) == Z.ModelChoice(
        "some/model.safetensors", "as given")
    assert Z.choose_model(h3s, Z.DEFAULT_SPEC).spec == Z.DEFAULT_SPEC
    with pytest.raises(ElfcoreError, match="needs a structure"):
        Z.resolve_model("auto")
    with pytest.raises(StructureError, match="not a chemical symbol"):
        Z.choose_model(["H", "Qq"])


# ------------------------------------------------------------------------------- the commands
def _predict(argv, capsys):
    rc = main(["predict", *argv, "--device", "cpu", "--no-progress", "--json"])
    captured = capsys.readouterr()
    return rc, (json.loads(captured.out) if rc == 0 else None), captured.err


def test_predict_auto_uses_zoo_hydrides(work, zoo_env, tmp_path, capsys, caplog):
    out = tmp_path / "elf.cube"
    with caplog.at_level(logging.INFO):
        rc, summary, err = _predict([str(work["poscar"]), "--grid", "6", "--out", str(out)], capsys)
    assert rc == 0, err
    assert summary["model"] == Z.HYDRIDE_SPEC and summary["model_choice"] == "chosen for H, S"
    assert out.exists() and summary["grid"] == [6, 6, 6] and 0.0 <= summary["elf_min"] <= summary["elf_max"]
    assert "model: zoo:hydrides (chosen for H, S)" in caplog.text


def test_predict_explicit_model_wins(work, zoo_env, tmp_path, capsys):
    from elfcore.models import save_model
    from elfcore.reproduce.bench import timing_model

    copy = tmp_path / "mine.safetensors"
    copy.write_bytes(work["model"].read_bytes())
    rc, summary, err = _predict([str(work["poscar"]), "--model", str(copy), "--grid", "4",
                                 "--out", str(tmp_path / "a.cube")], capsys)
    assert rc == 0, err
    assert summary["model"] == str(copy) and summary["model_choice"] == "as given"
    # a hydrogen model named explicitly is not swapped for zoo:hydrides: the hydride is refused by element
    h_model = tmp_path / "h.safetensors"
    save_model(timing_model(DescriptorSettings(r_cut=1.5, n_radial=2, l_max=1), width=8), h_model)
    rc, _, err = _predict([str(work["poscar"]), "--model", str(h_model), "--grid", "4",
                           "--out", str(tmp_path / "b.cube")], capsys)
    assert rc == 1 and "S (Z=16)" in err and not (tmp_path / "b.cube").exists()


def test_predict_auto_refuses_an_unknown_element_before_writing(zoo_env, tmp_path, capsys):
    write(tmp_path / "POSCAR", prototype("yh6"), format="vasp")
    rc, _, err = _predict([str(tmp_path / "POSCAR"), "--grid", "4", "--out", str(tmp_path / "y.cube")], capsys)
    assert rc == 1 and "holds Y, which no model knows" in err and "Traceback" not in err
    assert not (tmp_path / "y.cube").exists()


def test_netval_predicts_a_structure_with_the_chosen_model(work, zoo_env, capsys):
    from elfcore.predict import grid_shape_for_spacing

    rc = main(["netval", str(work["poscar"]), "--phi-only", "--spacing", "0.5", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    (row,) = json.loads(captured.out)["results"]
    assert row["model"] == Z.HYDRIDE_SPEC and row["model_choice"] == "chosen for H, S"
    assert row["grid"] == list(grid_shape_for_spacing(prototype("h3s").cell[:], 0.5))
    rc = main(["netval", str(work["poscar"]), "--phi-only", "--spacing", "0.5", "--device", "cpu"])
    assert rc == 0 and "predicted ELF, model: zoo:hydrides (chosen for H, S)" in capsys.readouterr().out


def test_netval_of_an_elf_file_uses_no_model(work, tmp_path, capsys):
    from elfcore.io import write_field

    path = tmp_path / "elf.cube"
    write_field(fake_elf(prototype("h3s")).rename("elf"), path)
    rc = main(["netval", str(path), "--phi-only", "--json", "--model", "no-such-model.safetensors"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "model" not in json.loads(captured.out)["results"][0]


def test_screen_auto_chooses_from_all_frames(work, zoo_env, tmp_path, h3s):
    pytest.importorskip("distributed")
    from distributed import Client

    from elfcore.screen import ScreenSettings, choose_for_frames, expand_inputs, read_records, screen

    traj = tmp_path / "mixed.extxyz"
    write(traj, [hydrogen_atoms(1), h3s, prototype("yh6")], format="extxyz")
    frames = list(expand_inputs([traj], species=None))
    choice = choose_for_frames(frames)
    assert choice.spec == Z.HYDRIDE_SPEC and choice.reason.startswith("chosen for H, S; Y (1 frame(s))")
    assert choose_for_frames(frames[:1]).spec == Z.DEFAULT_SPEC
    assert choose_for_frames(frames, "x.safetensors") == Z.ModelChoice("x.safetensors", "as given")
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        summary = screen([traj], tmp_path / "r.db", settings=ScreenSettings(spacing=0.5, upsample=1, device="cpu"),
                         scheduler=client, progress=False)
    assert summary["model"] == Z.HYDRIDE_SPEC and summary["model_choice"] == choice.reason
    assert (summary["ok"], summary["skipped"], summary["failed"]) == (2, 1, 0)
    rows = read_records(tmp_path / "r.db")
    assert [r["status"] for r in rows] == ["ok", "ok", "skipped"]
    assert "(Y" in rows[2]["reason"] and "the model knows H, S only" in rows[2]["reason"]


def test_evaluate_scores_a_hydride_model_on_hydride_data(work, capsys):
    """`elfcore evaluate` reads the cases with the model's elements (a hydrogen model still refuses S by name)."""
    rc = main(["evaluate", str(work["model"]), str(work["case"]), "--voxels", "200", "--device", "cpu",
               "--no-cache", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["cases"][0]["n_voxels"] == 200 and np.isfinite(report["overall"]["r2"])
    rc = main(["evaluate", Z.DEFAULT_SPEC, str(work["case"]), "--voxels", "200", "--device", "cpu", "--no-cache"])
    assert rc == 1 and "S" in capsys.readouterr().err
