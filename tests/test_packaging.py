"""The engine as an installed wheel: shipped models found as package data, no checkout needed.

Builds the wheel from a copy of the sources, installs it (not editable) into a fresh
virtual environment that borrows this environment's third-party packages through a
``.pth`` file (so torch is not downloaded again), and runs ``elfcore predict`` with a
``zoo:`` model from a directory outside the repository.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what a source distribution holds (MANIFEST.in): enough to build the wheel
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "elfcore", "assets/models", "assets/README.md"]


def _run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _clean_env() -> dict[str, str]:
    """This environment without anything that points elfcore at the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELFCORE_") and k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_assets"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(src)], env=_clean_env())
    (whl,) = dist.glob("elfcore-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its bin/ folder."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         env=_clean_env())
    # borrow this environment's dependencies (torch, numpy, ...) after the wheel is in
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(site) / "_elfcore_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin"


def test_wheel_carries_the_models_not_the_data(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    models = [n for n in names if n.startswith("elfcore/_assets/models/")]
    shipped = sorted(p.name for pattern in ("*.safetensors", "longrange_*.json")
                     for p in (ROOT / "assets" / "models").glob(pattern))
    assert sorted(Path(n).name for n in models) == shipped
    assert not [n for n in names if n.endswith(".nc")]
    assert not [n for n in names if n.split("/")[0] in ("app", "tests", "assets")]


def test_installed_wheel_predicts_with_a_zoo_model(installed, tmp_path):
    from ase import Atoms

    from elfcore import read_field

    where = _run([str(installed / "python"), "-c",
                  "import elfcore, elfcore.assets as a; print(elfcore.__file__); print(a.models_dir())"],
                 cwd=tmp_path, env=_clean_env()).stdout.split()
    assert not where[0].startswith(str(ROOT)) and not where[1].startswith(str(ROOT))
    assert where[1].endswith(os.path.join("elfcore", "_assets", "models"))

    atoms = Atoms("H4", positions=[(0.0, 0.0, 0.0), (0.74, 0.0, 0.0), (1.6, 1.6, 1.6), (1.6, 1.6, 2.34)],
                  cell=np.eye(3) * 3.2, pbc=True)
    atoms.write(tmp_path / "POSCAR", format="vasp")
    out = _run([str(installed / "elfcore"), "predict", "POSCAR", "--model", "zoo:rcut=3.0,lmax=2", "--grid", "8",
                "--device", "cpu", "--no-progress", "--out", "elf.cube", "--json"], cwd=tmp_path, env=_clean_env())
    summary = json.loads(out.stdout)
    assert summary["grid"] == [8, 8, 8] and summary["atoms"] == 4
    field = read_field(tmp_path / "elf.cube")
    assert field.shape == (8, 8, 8)
    values = np.asarray(field.values)
    assert np.all(np.isfinite(values)) and values.min() >= 0.0 and values.max() <= 1.0
    assert abs(float(values.mean()) - summary["elf_mean"]) < 1e-4


def test_engine_never_imports_the_app_dependencies():
    """Every elfcore module imports without the ``[app]`` extra's packages."""
    code = (
        "import importlib, pkgutil, sys, elfcore\n"
        "for m in pkgutil.walk_packages(elfcore.__path__, 'elfcore.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(' '.join(sorted({k.split('.')[0] for k in sys.modules})))\n"
    )
    loaded = set(_run([sys.executable, "-c", code], env=_clean_env()).stdout.split())
    assert not loaded & {"panel", "pyvista", "vtk", "vtkmodules", "holoviews", "bokeh", "param"}


def test_asset_lookup_order(tmp_path, monkeypatch):
    from elfcore import assets

    for name in ("ELFCORE_ASSETS", "ELFCORE_ZOO_DIR", "ELFCORE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert assets.models_dir() == ROOT / "assets" / "models"  # the checkout
    assert assets.data_dir() == ROOT / "assets" / "data"
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("ELFCORE_ASSETS", str(tmp_path))
    assert assets.models_dir() == tmp_path / "models"
    assert assets.data_dir() == ROOT / "assets" / "data"  # no data/ there: the next place
    monkeypatch.setenv("ELFCORE_DATA_DIR", str(tmp_path / "cases"))
    assert assets.data_dir() == tmp_path / "cases"  # taken as is
    with pytest.raises(ValueError, match="asset kind"):
        assets.asset_dir("weights")
