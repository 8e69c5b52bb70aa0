"""Metal-hydride reference data: prototypes, random crystals, CP2K kinds, the builder with a fake CP2K."""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from elfcore.errors import StructureError
from elfcore.reference import builder, hydrides
from elfcore.reference.cp2k import ELEMENT_KINDS, element_kind, single_point_input

from .test_builder import _FakeCP2K

CP2K_DATA = Path("/usr/share/cp2k")
# prototype -> (metal, H per metal, space group)
EXPECTED = {"lah10": ("La", 10, 225), "cah6": ("Ca", 6, 229), "yh6": ("Y", 6, 229), "h3s": ("S", 3, 229)}


def _space_group(atoms) -> int:
    spglib = pytest.importorskip("spglib")
    data = spglib.get_symmetry_dataset((atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers), symprec=1e-3)
    return int(data.number)


@pytest.mark.parametrize("key", sorted(EXPECTED))
@pytest.mark.parametrize("primitive", [False, True])
def test_prototype_composition_space_group_and_distances(key, primitive):
    metal, h_per_metal, sg = EXPECTED[key]
    atoms = hydrides.prototype(key, 200.0, primitive=primitive)
    symbols = atoms.get_chemical_symbols()
    assert set(symbols) == {metal, "H"} and symbols.count("H") == h_per_metal * symbols.count(metal)
    assert _space_group(atoms) == sg == atoms.info["space_group"]
    assert 1.0 < hydrides.min_pair_distance(atoms, "H", "H") < 1.6  # no H2 molecules, no isolated H
    assert hydrides.min_pair_distance(atoms, metal, "H") > 1.4


def test_prototype_volume_follows_the_target_pressure():
    v = [hydrides.prototype("lah10", p).get_volume() for p in (100.0, 170.0, 300.0)]
    assert v[0] > v[1] > v[2]
    assert v[1] == pytest.approx(hydrides.prototype("lah10").get_volume())  # 170 GPa: the literature cell
    assert hydrides.prototype_volume_factor(150.0, 150.0) == 1.0
    with pytest.raises(StructureError, match="unknown hydride prototype 'xh99'"):
        hydrides.prototype("xh99")


def test_random_hydride_has_the_stoichiometry():
    pytest.importorskip("pyxtal")
    v = 3.0
    atoms = hydrides.random_hydride("cah6", 139, 2, v, seed=5)
    assert sorted(atoms.get_chemical_symbols()) == ["Ca"] * 2 + ["H"] * 12
    assert atoms.get_volume() / len(atoms) == pytest.approx(v)
    assert hydrides.min_pair_distance(atoms, "H", "H") >= 0.8 and hydrides.min_pair_distance(atoms, "Ca", "H") >= 1.3
    assert atoms.info["space_group"] == 139 and atoms.info["formula"] == "CaH6"
    again = hydrides.random_hydride("cah6", 139, 2, v, seed=5)
    np.testing.assert_allclose(again.get_positions(), atoms.get_positions())


def test_random_hydride_without_pyxtal_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyxtal", None)  # import pyxtal now raises ImportError
    with pytest.raises(StructureError, match="optional package pyxtal"):
        hydrides.random_hydride("h3s", 139, 2, 3.4, seed=1)


@pytest.mark.parametrize("key, metal, potential, basis_file", [
    ("lah10", "La", "GTH-PBE-q11", "BASIS_MOLOPT_UCL"), ("h3s", "S", "GTH-PBE-q6", None),
    ("cah6", "Ca", "GTH-PBE-q10", None)])
def test_single_point_input_has_a_kind_per_element(key, metal, potential, basis_file):
    atoms = hydrides.prototype(key, 200.0, primitive=True)
    k = builder.kpoint_grid(atoms, 12.0)
    text = single_point_input(atoms, dataclasses.replace(builder.HYDRIDE_DFT, kpoints=tuple(k)))
    assert text.count("&KIND ") == 2
    assert "&KIND H\n      BASIS_SET DZVP-MOLOPT-SR-GTH\n      POTENTIAL GTH-PBE-q1\n" in text
    assert f"&KIND {metal}\n      BASIS_SET DZVP-MOLOPT-SR-GTH\n      POTENTIAL {potential}\n" in text
    assert f"SCHEME MONKHORST-PACK {k[0]} {k[1]} {k[2]}" in text and min(k) >= 2
    assert "&ELF_CUBE" in text and "STRESS_TENSOR ANALYTICAL" in text
    files = [ln.split()[-1] for ln in text.splitlines() if "BASIS_SET_FILE_NAME" in ln]
    assert files == ["BASIS_MOLOPT"] + ([basis_file] if basis_file else [])


def test_unknown_element_is_refused_by_name():
    atoms = Atoms("FeH3", scaled_positions=[[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], cell=[3.0] * 3,
                  pbc=True)
    with pytest.raises(StructureError, match=r"Fe \(Z=26\)"):
        single_point_input(atoms, builder.HYDRIDE_DFT)
    with pytest.raises(StructureError, match="element Fe"):
        element_kind("Fe", builder.HYDRIDE_DFT)


@pytest.mark.skipif(not (CP2K_DATA / "GTH_POTENTIALS").exists(), reason="Debian cp2k-data not installed")
def test_element_kinds_exist_in_cp2k_data():
    potentials = (CP2K_DATA / "GTH_POTENTIALS").read_text().splitlines()
    for symbol, kind in ELEMENT_KINDS.items():
        assert any(ln.split()[:1] == [symbol] and kind.potential in ln.split()[1:] for ln in potentials), symbol
        basis = (CP2K_DATA / kind.basis_file).read_text().splitlines()
        q = kind.potential.rsplit("-", 1)[1]
        assert any(ln.split()[:2] == [symbol, kind.basis] and ln.split()[-1].endswith(q) for ln in basis), symbol


def test_default_plan_has_the_hydrides():
    cases = [c for c in builder.plan_cases(builder.ReferencePlan()) if c.family == "hydride"]
    protos = [c for c in cases if c.seed is None]
    assert {c.prototype for c in protos} == set(EXPECTED) and all(c.role == "test" for c in protos)
    assert {c.pressure_gpa for c in cases} == {100.0, 200.0, 300.0}
    randoms = [c for c in cases if c.seed is not None]
    assert randoms and all(c.role == "train" for c in randoms)
    assert "hydride_lah10_p200" in {c.name for c in protos} and "hydride_h3s_sg139_p100" in {c.name for c in randoms}
    assert len({c.name for c in cases}) == len(cases)
    with pytest.raises(ValueError, match="unknown"):
        builder.ReferencePlan(hydride_prototypes=("xh99",))


def _hydride_plan(random_groups=()):
    return builder.ReferencePlan(
        fluids=(), large_fluids=(), cubic_groups=(), hexagonal_groups=(), molecular_cubic=(),
        molecular_hexagonal=(), train_cubic_groups=(), train_hexagonal_groups=(), train_round_atoms=(),
        hydride_prototypes=("h3s",), hydride_pressures=(150.0,), hydride_random_groups=random_groups)


def test_tiny_hydride_case_through_the_builder_with_fake_dft(tmp_path, monkeypatch):
    from elfcore.io import read_case

    plan = _hydride_plan()
    assert [c.name for c in builder.plan_cases(plan)] == ["hydride_h3s_p150"]
    fake = _FakeCP2K()
    monkeypatch.setattr(builder._cp2k, "run_cp2k", fake)
    data, work = tmp_path / "data", tmp_path / "work"
    res = builder.build(plan, data, work, only=["hydride_*"], threads=1, progress=False)
    assert res["written"] == ["hydride_h3s_p150"] and fake.sp_runs == 1
    ds = read_case(data / "hydride_h3s_p150.nc")
    assert sorted(ds["numbers"].values.tolist()) == [1, 1, 1, 16]
    a = ds.attrs
    assert a["family"] == "hydride" and a["role"] == "test" and a["prototype"] == "h3s" and a["formula"] == "H3S"
    assert a["target_pressure_gpa"] == 150.0 and a["pressure_gpa"] == pytest.approx(100.0)  # the fake's stress
    assert a["space_group"] == 229 and a["temperature_k"] == 0.0
    kinds = json.loads(a["settings"])["kinds"]
    assert kinds["S"]["potential"] == "GTH-PBE-q6" and kinds["H"]["basis"] == "DZVP-MOLOPT-SR-GTH"
    k = list(np.atleast_1d(a["kpoints"]))
    inp = (work / "sp" / "hydride_h3s_p150" / "sp.inp").read_text()
    assert f"SCHEME MONKHORST-PACK {k[0]} {k[1]} {k[2]}" in inp and "&KIND S" in inp
    # resume: nothing recomputed
    res = builder.build(plan, data, work, only=["hydride_*"], threads=1, progress=False)
    assert res["written"] == [] and res["skipped"] == ["hydride_h3s_p150"] and fake.sp_runs == 1


def test_random_hydride_case_through_the_builder(tmp_path, monkeypatch):
    pytest.importorskip("pyxtal")
    from elfcore.io import read_case

    monkeypatch.setattr(builder._cp2k, "run_cp2k", _FakeCP2K())
    res = builder.build(_hydride_plan((139,)), tmp_path / "data", tmp_path / "work", only=["hydride_h3s_sg*"],
                        threads=1, progress=False)
    assert res["written"] == ["hydride_h3s_sg139_p150"]
    ds = read_case(tmp_path / "data" / "hydride_h3s_sg139_p150.nc")
    assert sorted(ds["numbers"].values.tolist()) == [1] * 6 + [16] * 2 and ds.attrs["role"] == "train"


def test_build_without_pyxtal_writes_the_prototypes_then_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(builder._cp2k, "run_cp2k", _FakeCP2K())
    monkeypatch.setitem(sys.modules, "pyxtal", None)
    with pytest.raises(StructureError, match="pyxtal"):
        builder.build(_hydride_plan((139,)), tmp_path / "data", tmp_path / "work", threads=1, progress=False)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["hydride_h3s_p150.nc"]
