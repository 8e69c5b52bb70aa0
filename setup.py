"""Build hook: the wheel carries the shipped model zoo as package data.

The source tree keeps the models in ``assets/models`` (beside ``assets/data`` and
``assets/README.md``, which say how each file was made). A regular (non-editable) build
copies them into ``elfcore/_assets/models`` of the wheel, where
:func:`elfcore.assets.models_dir` finds them after ``pip install``. The reference cases in
``assets/data`` are not copied: they are large and only the app, the tests and the
reproduction scripts read them (see ``elfcore/assets.py``). All other metadata is in
pyproject.toml.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: source folder → (folder inside the package, file patterns) of the package data the wheel carries:
#: the model zoo and the long-range corrections fitted to its entries
SHIPPED = {"assets/models": ("_assets/models", ("*.safetensors", "longrange_*.json"))}


class BuildPyWithAssets(build_py):
    """``build_py`` that also copies :data:`SHIPPED` into the built ``elfcore`` package."""

    def _asset_files(self):
        root = Path(__file__).resolve().parent
        for source, (target, patterns) in SHIPPED.items():
            for pattern in patterns:
                files = sorted((root / source).glob(pattern))
                if not files:
                    raise FileNotFoundError(f"no {pattern} in {source}: the wheel would ship without its models")
                for path in files:
                    yield path, Path(self.build_lib) / "elfcore" / target / path.name

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads assets/ of the checkout
            return
        for source, dest in self._asset_files():
            self.mkpath(str(dest.parent))
            self.copy_file(str(source), str(dest))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [str(dest) for _, dest in self._asset_files()]


setup(cmdclass={"build_py": BuildPyWithAssets})
