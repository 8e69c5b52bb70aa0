"""Input generation: golden CP2K inputs, settings validation, plan and structures."""
from pathlib import Path

import numpy as np
import pytest

from elfcore.errors import StructureError
from elfcore.reference import builder
from elfcore.reference.cp2k import CP2KSettings, MDSettings, md_input, single_point_input
from elfcore.reference.qe import pp_input, pw_input
from elfcore.reference.structures import fluid_start, gamma_supercell, min_distance

DATA = Path(__file__).parent / "data"


def test_golden_md_input(h4, tiny_settings, tiny_md):
    assert md_input(h4, tiny_settings, tiny_md, project="md") == (DATA / "golden_md.inp").read_text()


def test_golden_single_point_input(h4, tiny_settings):
    assert single_point_input(h4, tiny_settings, project="sp") == (DATA / "golden_sp.inp").read_text()


def test_ot_input_has_no_smearing(h4):
    text = single_point_input(h4, CP2KSettings(smearing_k=0, added_mos=0), stress=False, cubes=False)
    assert "&OT ON" in text and "SMEAR" not in text and "STRESS_TENSOR" not in text and "ELF_CUBE" not in text


@pytest.mark.parametrize(
    "kwargs",
    [dict(cutoff_ry=0), dict(eps_scf=2.0), dict(max_scf=0), dict(smearing_k=-1), dict(basis="DZVP MOLOPT")],
)
def test_bad_cp2k_settings(kwargs):
    with pytest.raises(ValueError):
        CP2KSettings(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(timestep_fs=0), dict(temperature_k=-5)])
def test_bad_md_settings(kwargs):
    with pytest.raises(ValueError):
        MDSettings(**kwargs)


def test_non_hydrogen_rejected(h4, tiny_settings):
    atoms = h4.copy()
    atoms.symbols[0] = "He"
    with pytest.raises(StructureError):
        single_point_input(atoms, tiny_settings)


def test_fluid_start_is_dense_and_void_free():
    atoms = fluid_start(2.64, seed=3)
    assert len(atoms) == 64
    assert atoms.get_volume() / len(atoms) == pytest.approx(2.64)
    assert min_distance(atoms) == pytest.approx(0.74, abs=1e-6)  # only intramolecular bonds are that short
    # every atom has exactly one partner at the bond length
    from ase.neighborlist import neighbor_list

    i, d = neighbor_list("id", atoms, 0.8)
    assert np.bincount(i, minlength=64).tolist() == [1] * 64
    # no voids: the largest empty sphere is small (grid search of the distance to the nearest atom)
    g = (np.stack(np.meshgrid(*[np.arange(12) / 12] * 3, indexing="ij"), -1).reshape(-1, 3)) @ atoms.cell[:]
    from ase import Atoms

    probe = Atoms("H" * len(g), positions=g, cell=atoms.cell, pbc=True)
    from scipy.spatial import cKDTree

    tree = cKDTree(atoms.get_positions() % atoms.cell.lengths(), boxsize=atoms.cell.lengths())
    dist, _ = tree.query(probe.get_positions() % atoms.cell.lengths())
    assert dist.max() < 1.6


def test_fluid_start_seeds_differ():
    a, b = fluid_start(2.8, seed=1), fluid_start(2.8, seed=2)
    assert not np.allclose(a.get_positions(), b.get_positions())
    assert np.allclose(a.get_positions(), fluid_start(2.8, seed=1).get_positions())


def test_gamma_supercell(h4):
    sc, reps = gamma_supercell(h4, 5.0)
    assert reps == (2, 2, 2) and len(sc) == 32


def test_plan_cases_roles_and_steps():
    plan = builder.ReferencePlan()
    cases = builder.plan_cases(plan)
    fluid = [c for c in cases if c.family == "fluid" and c.target.replicas == 1]
    assert len(fluid) == 30
    assert sum(c.role == "train" for c in fluid) == 5
    large = [c for c in cases if c.family == "fluid" and c.target.replicas > 1]
    assert len(large) == 9 and sum(c.role == "train" for c in large) == 3
    # the paper's three pressures are in the plan; volumes decrease with pressure
    targets = sorted(plan.fluids, key=lambda t: t.pressure_gpa)
    assert {76.0, 115.1, 138.5} <= {t.pressure_gpa for t in targets}
    assert all(a.volume_per_atom > b.volume_per_atom for a, b in zip(targets, targets[1:]))
    assert plan.snapshot_times_fs() == [200, 250, 300, 350, 400, 450]
    assert plan.first_segment_fs == 200 and plan.production_timestep_fs == 0.5
    assert [c.md_time_fs for c in fluid[:2]] == [200, 250]
    assert len([c for c in cases if c.family == "cubic"]) >= 10
    assert len([c for c in cases if c.family == "hexagonal"]) >= 10
    assert all(195 <= c.space_group <= 230 for c in cases if c.family == "cubic")
    assert all(168 <= c.space_group <= 194 for c in cases if c.family == "hexagonal")
    assert len({c.name for c in cases}) == len(cases)
    mol = [c for c in cases if c.molecular]
    assert {c.family for c in mol} == {"cubic_molecular", "hexagonal_molecular"} and len(mol) == 10
    assert all(c.name.startswith(("cubic_h2_sg", "hexagonal_h2_sg")) and c.n_atoms % 2 == 0 for c in mol)
    assert not any(c.molecular for c in cases if c.family in ("fluid", "cubic", "hexagonal"))
    extra = [c for c in cases if c.family in ("cubic_train", "hexagonal_train")]
    assert len(extra) == 80 and all(c.role == "train" and not c.molecular for c in extra)
    # rounds 1-2: small cells; rounds 3-4: the test set's larger cells
    assert {c.n_atoms for c in extra if "_train3_" in c.name or "_train4_" in c.name} == {16, 24}
    assert {c.n_atoms for c in extra if "_train_" in c.name or "_train2_" in c.name} == {8, 12}
    assert len({c.seed for c in extra}) == len(extra)
    test_seeds = {c.seed for c in cases if c.family in ("cubic", "hexagonal")}
    assert not test_seeds & {c.seed for c in extra}  # other structures than the test crystals


def test_plan_rejects_bad_protocol():
    with pytest.raises(ValueError, match="production_timestep_fs"):
        builder.ReferencePlan(production_timestep_fs=0)
    with pytest.raises(ValueError):
        builder.ReferencePlan(n_snapshots=0)
    with pytest.raises(ValueError, match="crystal_atoms"):
        builder.ReferencePlan(train_round_atoms=((8, 11),))


def test_md_input_text_is_deterministic():
    plan = builder.ReferencePlan()
    t = plan.fluids[0]
    assert builder.md_input_text(plan, t) == builder.md_input_text(plan, t)
    assert f"SEED {t.seed}" in builder.md_input_text(plan, t)


def test_qe_inputs(h4):
    text = pw_input(h4, (24, 20, 24), pseudo_name="H.UPF")
    assert "nr1 = 24, nr2 = 20, nr3 = 24" in text and "K_POINTS gamma" in text and "nat = 4" in text
    assert "plot_num = 8" in pp_input()


@pytest.mark.parametrize("sg", [221, 191])
def test_random_crystal_density_and_min_distance(sg):
    pytest.importorskip("pyxtal")
    from elfcore.reference.structures import random_crystal

    atoms = random_crystal(sg, 8, 2.8, molecular=False, seed=11, min_hh=0.6)
    assert len(atoms) == 8
    assert atoms.get_volume() / len(atoms) == pytest.approx(2.8)
    assert min_distance(atoms) >= 0.6
    assert atoms.info["space_group"] == sg


@pytest.mark.parametrize("sg, n", [(198, 8), (174, 12)])
def test_random_molecular_crystal_keeps_h2_units(sg, n):
    pytest.importorskip("pyxtal")
    from ase.neighborlist import neighbor_list

    from elfcore.reference.structures import H2_BOND, intermolecular_distance, random_crystal

    atoms = random_crystal(sg, n, 2.8, molecular=True, seed=7, min_hh=0.6, max_aspect=2.0, min_contact=1.0)
    assert len(atoms) == n and atoms.info["space_group"] == sg
    assert atoms.get_volume() / len(atoms) == pytest.approx(2.8)
    # every atom has exactly one partner at the H₂ bond length; other contacts are ≥ min_contact
    i, d = neighbor_list("id", atoms, 0.9)
    assert np.allclose(d, H2_BOND, atol=1e-6) and np.array_equal(np.bincount(i, minlength=n), np.ones(n, int))
    assert intermolecular_distance(atoms) >= 1.0
    with pytest.raises(StructureError, match="intermolecular"):
        random_crystal(sg, n, 2.8, molecular=True, seed=7, min_hh=0.6, min_contact=5.0, max_tries=2)


def test_random_crystal_impossible_raises():
    pytest.importorskip("pyxtal")
    from elfcore.reference.structures import random_crystal

    with pytest.raises(StructureError):
        random_crystal(221, 8, 0.05, molecular=False, seed=1, min_hh=0.6, max_tries=3)


def test_random_crystal_max_aspect():
    pytest.importorskip("pyxtal")
    from elfcore.reference.structures import random_crystal

    def aspect(atoms):
        w = atoms.get_volume() / np.linalg.norm(np.cross(atoms.cell[[1, 2, 0]], atoms.cell[[2, 0, 1]]), axis=1)
        return w.max() / w.min()

    # hexagonal groups leave c/a free: without a limit this seed gives a flat cell (c = 1.8 Å)
    free = random_crystal(168, 16, 2.5, molecular=False, seed=2026 + 168, min_hh=0.6)
    assert aspect(free) > 2.0
    limited = random_crystal(168, 16, 2.5, molecular=False, seed=2026 + 168, min_hh=0.6, max_aspect=2.0)
    assert aspect(limited) <= 2.0 and limited.info["space_group"] == 168
    with pytest.raises(StructureError):
        random_crystal(168, 16, 2.5, molecular=False, seed=2026 + 168, min_hh=0.0, max_aspect=1.0001, max_tries=3)


def test_random_crystal_is_deterministic():
    pytest.importorskip("pyxtal")
    from elfcore.reference.structures import random_crystal

    for molecular in (False, True):
        a = random_crystal(205, 8, 2.6, molecular=molecular, seed=5)
        b = random_crystal(205, 8, 2.6, molecular=molecular, seed=5)
        assert np.allclose(a.get_positions(), b.get_positions()) and np.allclose(a.cell[:], b.cell[:])


def test_kpoint_grid():
    from ase import Atoms

    atoms = Atoms("H", cell=[3.0, 4.0, 12.5], pbc=True)
    assert builder.kpoint_grid(atoms, 12.0) == [4, 3, 1]


def test_kpoints_in_input(h4, tiny_settings):
    import dataclasses

    text = single_point_input(h4, dataclasses.replace(tiny_settings, kpoints=(3, 2, 1)))
    assert "SCHEME MONKHORST-PACK 3 2 1" in text
    with pytest.raises(ValueError):
        CP2KSettings(kpoints=(0, 1, 1))


def test_every_crystal_of_the_default_plan_can_be_built(tmp_path):
    """pyxtal finds every crystal of the shipped plan (a build stops at the first case that fails)."""
    pytest.importorskip("pyxtal")
    plan = builder.ReferencePlan()
    for spec in builder.plan_cases(plan):
        if spec.family == "fluid":
            continue
        atoms, info = builder.case_structure(spec, plan, tmp_path)
        assert len(atoms) >= spec.n_atoms and info["space_group"] == spec.space_group
        assert info["molecular"] == int(spec.molecular)
