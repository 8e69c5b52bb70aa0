"""The malformed-input corpus (``tests/fuzz_corpus.py``): every case is refused cleanly, in bounded time and memory.

The corpus (≥ 300 cases over cube, XSF, ELFCAR, CHGCAR, netCDF, app uploads,
model files and ``elfcore predict`` runs) is generated and run in one fresh
interpreter, so its memory measurements are its own. For each case: a one-line
:class:`~elfcore.errors.ElfcoreError` (API), exit code 1 with one
``elfcore <cmd>: error:`` line and no traceback (CLI), a one-line message
(uploads); the growth of the peak RSS and the CPU time of each case are bounded.
"""
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Per-case bounds: CPU seconds, growth of the process's peak RSS (MiB).
MAX_CASE_CPU_S = 10.0
MAX_CASE_RSS_GROWTH_MIB = 256.0
#: No part of the corpus may push the peak RSS more than this above its interpreter with elfcore, torch and the
#: app state loaded (before the first case).
MAX_PEAK_ABOVE_START_MIB = 512.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Generate and run the whole corpus in one fresh interpreter (one start-up of torch and the app)."""
    out = tmp_path_factory.mktemp("fuzz") / "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "tests.fuzz_corpus", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    data = json.loads(out.read_text())
    return {"results": data["results"], "parts": {"all": data["summary"]}}


def _report(rows):
    return "\n".join(f"{r['id']}: {r['outcome']}: {r['message'][:400]}" for r in rows)


@pytest.mark.parametrize("group", ["file", "upload", "model", "predict"])
def test_every_case_is_refused_with_one_line(corpus, group):
    rows = [r for r in corpus["results"] if r["group"] == group]
    assert rows
    failed = [r for r in rows if not r["ok"]]
    assert not failed, _report(failed)
    for r in rows:
        assert "Traceback" not in r["message"], r["id"]
        if r["expect"] == "refuse":
            assert r["outcome"] == "refused", r["id"]


def test_corpus_covers_the_formats_and_is_large(corpus):
    ids = [r["id"] for r in corpus["results"]]
    assert len(ids) >= 300
    assert len(set(ids)) == len(ids)
    for fmt in ("cube", "xsf", "elfcar", "chgcar", "netcdf"):
        assert sum(i.startswith(f"file-{fmt}-") for i in ids) >= 30, fmt
    assert sum(i.startswith("upload-") for i in ids) >= 30
    assert sum(i.startswith("model-") for i in ids) >= 30


def test_each_case_is_bounded_in_time_and_memory(corpus):
    rows = corpus["results"]
    slow = [r for r in rows if r["cpu_seconds"] > MAX_CASE_CPU_S]
    assert not slow, [(r["id"], r["cpu_seconds"]) for r in slow]
    heavy = [r for r in rows if r["rss_growth_mib"] > MAX_CASE_RSS_GROWTH_MIB]
    assert not heavy, [(r["id"], r["rss_growth_mib"]) for r in heavy]
    for part, summary in corpus["parts"].items():
        assert summary["peak_rss_mib"] - summary["baseline_rss_mib"] < MAX_PEAK_ABOVE_START_MIB, (part, summary)


def test_file_size_limit_is_a_one_line_error_without_part_files(tmp_path):
    """A write that hits RLIMIT_FSIZE (as a full disk would) ends in one line and leaves no temporary file."""
    from elfcore.descriptor import DescriptorSettings
    from elfcore.models import save_model
    from elfcore.reproduce.bench import timing_model

    save_model(timing_model(DescriptorSettings(r_cut=2.0, n_radial=2, l_max=1), width=8), tmp_path / "m.safetensors")
    (tmp_path / "POSCAR").write_text("h\n1.0\n3 0 0\n0 3 0\n0 0 3\nH\n2\nCartesian\n0 0 0\n0.74 0 0\n")
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
            "from elfcore.cli import main; sys.exit(main(sys.argv[1:]))")
    res = subprocess.run([sys.executable, "-c", code, "predict", str(tmp_path / "POSCAR"), "--model",
                          str(tmp_path / "m.safetensors"), "--grid", "24", "--device", "cpu", "--no-progress",
                          "--out", str(tmp_path / "out.cube")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [line for line in res.stderr.splitlines() if line.strip() and "predicting ELF" not in line]
    assert res.returncode == 1, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("elfcore predict: error: cannot write"), res.stderr
    assert str(tmp_path / "out.cube") in lines[0] and ".part" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["POSCAR", "m.safetensors"]


def test_orphan_part_files_of_dead_writers_are_removed(tmp_path):
    from elfcore.grid import make_field
    from elfcore.io import write_field

    dead = 2**22 + 12345  # above the default pid_max: no such process
    orphan = tmp_path / f"out.cube.part{dead}"
    orphan.write_text("half-written")
    foreign = tmp_path / "out.cube.partial-notes"
    foreign.write_text("not ours")
    write_field(make_field(np.full((2, 2, 2), 0.5), np.eye(3) * 3), tmp_path / "out.cube")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.cube", "out.cube.partial-notes"]


def test_voxel_limit_setting(tmp_path, monkeypatch):
    from elfcore.errors import FormatError
    from elfcore.grid import make_field
    from elfcore.io import read_field, write_field
    from elfcore.io.validate import DEFAULT_MAX_VOXELS, MAX_VOXELS_ENV, max_voxels

    path = tmp_path / "f.cube"
    write_field(make_field(np.full((4, 4, 4), 0.5), np.eye(3) * 3), path)
    assert max_voxels() == DEFAULT_MAX_VOXELS
    with pytest.raises(FormatError, match="above the limit of 63"):
        read_field(path, max_voxels=63)
    assert read_field(path, max_voxels=64).shape == (4, 4, 4)
    monkeypatch.setenv(MAX_VOXELS_ENV, "10")
    with pytest.raises(FormatError, match=MAX_VOXELS_ENV):
        read_field(path)
    assert read_field(path, max_voxels=1e6).shape == (4, 4, 4)
    monkeypatch.setenv(MAX_VOXELS_ENV, "lots")
    with pytest.raises(Exception, match="positive integer"):
        read_field(path)


def test_app_websocket_limit_carries_the_upload_cap():
    from app.pipeline import MAX_UPLOAD_BYTES, WEBSOCKET_MAX_MESSAGE_BYTES, upload_capacity

    assert upload_capacity(WEBSOCKET_MAX_MESSAGE_BYTES) >= MAX_UPLOAD_BYTES
    assert upload_capacity(20 * 2**20) < MAX_UPLOAD_BYTES  # why Bokeh's default (20 MiB) is not enough
    script = (ROOT / "scripts" / "elfcore.sh").read_text()
    assert f"--websocket-max-message-size {WEBSOCKET_MAX_MESSAGE_BYTES}" in script
    main = (ROOT / "app" / "main.py").read_text()
    assert "websocket_max_message_size=WEBSOCKET_MAX_MESSAGE_BYTES" in main
    assert resource.RLIMIT_FSIZE  # the platform has the limit the file-size test uses
