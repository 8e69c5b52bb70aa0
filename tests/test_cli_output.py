"""The command line's one output path: commands return dicts, ``elfcore.cli`` prints them."""
import argparse
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest

from elfcore.cli import COMMANDS, emit, main, render_text
from elfcore.grid import make_field
from elfcore.io import write_field
from elfcore.jsonsafe import dumps, to_jsonable

CELL = np.diag([3.0, 3.2, 3.4])


# --------------------------------------------------------------------------- JSON clean-up
def test_to_jsonable_cleans_numpy_paths_and_nan():
    obj = {
        "f32": np.float32(0.25), "i64": np.int64(7), "flag": np.bool_(True), "arr": np.arange(3).reshape(1, 3),
        "path": Path("a") / "b.nc", "nan": float("nan"), "inf": np.float64(np.inf), "tuple": (1, np.nan),
        3: "int key", "other": types.SimpleNamespace(x=1),
    }
    out = to_jsonable(obj)
    assert out["f32"] == 0.25 and type(out["f32"]) is float
    assert out["i64"] == 7 and type(out["i64"]) is int
    assert out["flag"] is True
    assert out["arr"] == [[0, 1, 2]]
    assert out["path"] == str(Path("a") / "b.nc")
    assert out["nan"] is None and out["inf"] is None and out["tuple"] == [1, None]
    assert out["3"] == "int key" and out["other"] == "namespace(x=1)"
    assert json.loads(dumps(obj)) == out  # strict JSON: no NaN tokens


def test_dumps_refuses_nothing_json_cannot_hold():
    text = dumps({"a": [np.float16(1.5), np.nan, {"b": np.array([np.inf])}]})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": [1.5, None, {"b": [None]}]}


# --------------------------------------------------------------------------- printing
def _command(render=None, exit_code=None):
    mod = types.SimpleNamespace()
    if render is not None:
        mod.render = render
    if exit_code is not None:
        mod.exit_code = exit_code
    return mod


def test_emit_json_prints_one_clean_object(capsys):
    result = {"x": np.float64(1.5), "nan": math.nan, "path": Path("out.nc")}
    rc = emit(result, argparse.Namespace(json=True), _command(render=lambda r, a: "never used"))
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {"x": 1.5, "nan": None, "path": "out.nc"}


def test_emit_text_uses_the_commands_render(capsys):
    seen = {}

    def render(result, args):
        seen["args"] = args
        return f"value {result['x']:.2f}"

    args = argparse.Namespace(json=False)
    assert emit({"x": 2.0}, args, _command(render=render)) == 0
    assert capsys.readouterr().out == "value 2.00\n" and seen["args"] is args


def test_emit_render_none_prints_nothing(capsys):
    assert emit({"x": 1}, argparse.Namespace(json=False), _command(render=lambda r, a: None)) == 0
    assert capsys.readouterr().out == ""


def test_emit_without_render_uses_the_generic_text(capsys):
    assert emit({"a": 1, "b": {"c": [1.0, 2.5]}}, argparse.Namespace(), _command()) == 0
    assert capsys.readouterr().out == "a  1\nb\n  c  [1, 2.5]\n"


def test_emit_exit_code_hook(capsys):
    cmd = _command(render=lambda r, a: "x", exit_code=lambda r: 1 if r["errors"] else 0)
    assert emit({"errors": {"cnn": "failed"}}, argparse.Namespace(json=True), cmd) == 1
    assert emit({"errors": {}}, argparse.Namespace(json=False), cmd) == 0


def test_render_text_nested_lists_and_missing_values():
    text = render_text({"name": "case", "r2": 0.123456789, "none": None, "np": np.int32(4),
                        "rows": [{"k": 1}, {"k": 2}]})
    assert text.splitlines() == ["name  case", "r2    0.123457", "none  -", "np    4", "rows", "  k  1", "  k  2"]


# --------------------------------------------------------------------------- every command returns a dict
def test_every_command_module_has_run_and_render():
    import importlib

    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(f"elfcore.commands.{module}")
        assert callable(mod.run) and callable(mod.add_arguments) and callable(mod.render), name


def _run(name, argv):
    """``run(args)`` of one command without the printing."""
    import importlib

    mod = importlib.import_module(f"elfcore.commands.{COMMANDS[name][0]}")
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    args = parser.parse_args(argv)
    result = mod.run(args)
    assert isinstance(result, dict), name
    json.loads(dumps(result))  # JSON-serialisable after the one clean-up
    return mod, args, result


@pytest.fixture
def elf_file(rng, tmp_path):
    x = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    values = 0.5 + 0.4 * np.sin(x)[:, None, None] * np.cos(x)[None, :, None] * np.ones(8)[None, None, :]
    field = make_field(values + 0.01 * rng.random((8, 8, 8)), CELL, rng.random((4, 3)) @ CELL, [1] * 4, name="elf")
    path = tmp_path / "elf.nc"
    write_field(field, path)
    return path


def test_info_and_netval_return_dicts(elf_file):
    mod, args, info = _run("info", [str(elf_file)])
    assert info["shape"] == [8, 8, 8] and "field    elf" in mod.render(info, args)
    mod, args, res = _run("netval", [str(elf_file), "--phi-only"])
    assert [r["file"] for r in res["results"]] == [str(elf_file)]
    assert mod.render(res, args).startswith(f"{elf_file}  grid 8x8x8")


def test_kcorrect_returns_dict_and_renders(elf_file, tmp_path):
    mod, args, info = _run("kcorrect", [str(elf_file), str(elf_file), "--shells", "1"])
    assert info["mode"] == "oracle" and info["r2_after"] == pytest.approx(1.0)
    text = mod.render(info, args)
    assert "before" in text and "after" in text and "oracle scan" not in text


def test_predict_and_bench_return_dicts(tmp_path, rng):
    from ase import Atoms
    from ase.io import write

    from elfcore.descriptor import DescriptorSettings
    from elfcore.models import save_model
    from elfcore.reproduce.bench import timing_model

    model = tmp_path / "m.safetensors"
    save_model(timing_model(DescriptorSettings(r_cut=1.5, n_radial=2, l_max=1), width=8), model)
    write(tmp_path / "POSCAR", Atoms("H4", positions=rng.random((4, 3)) @ CELL, cell=CELL, pbc=True), format="vasp")
    mod, args, res = _run("predict", [str(tmp_path / "POSCAR"), "--model", str(model), "--grid", "4",
                                      "--device", "cpu", "--out", str(tmp_path / "elf.cube"), "--no-progress"])
    assert res["grid"] == [4, 4, 4] and res["files"] == [str(tmp_path / "elf.cube")]
    assert mod.render(res, args) is None
    mod, args, res = _run("bench", ["--atoms", "8", "--grid", "6", "--repeats", "1", "--naive-voxels", "10",
                                    "--device", "cpu", "--model", str(model)])
    assert res["grid"] == [6, 6, 6] and mod.render(res, args).startswith("device")


def test_zoo_list_and_reference_list_text(capsys):
    assert main(["zoo", "list"]) == 0
    assert capsys.readouterr().out.startswith("r_cut l_max file")
    mod, args, res = _run("zoo", ["list"])
    assert {"directory", "entries"} <= set(res)
    mod, args, res = _run("reference", ["list", "--out", "no-such-folder"])
    assert res["cases"] and not any(r["done"] for r in res["cases"])
    assert mod.render(res, args).splitlines()[0].startswith(res["cases"][0]["name"])


def test_reproduce_render_and_exit_code():
    from elfcore.commands import reproduce

    summary = {"mode": "quick", "n_cases": 2, "seconds": 12.3, "figures": ["a.png"], "results_md": "r.md",
               "errors": {"cnn": "no torch"}}
    text = reproduce.render(summary, argparse.Namespace())
    assert text.splitlines() == ["reproduce (quick): 2 cases in 12 s", "  figure a.png", "  tables in r.md",
                                 "  part cnn did not run: no torch"]
    assert reproduce.exit_code(summary) == 1 and reproduce.exit_code({**summary, "errors": {}}) == 0
