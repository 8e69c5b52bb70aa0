"""Tests of ``elfcore bench`` (correct keys and consistency, not timings)."""
import json

from elfcore.cli import main

KEYS = {"descriptor_s", "inference_s", "total_s", "peak_mem_gb", "device", "atoms", "grid",
        "naive_s_per_voxel", "speedup"}


def test_bench_json(capsys):
    rc = main(["bench", "--atoms", "20", "--grid", "12", "--repeats", "1", "--naive-voxels", "30",
               "--device", "cpu", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert KEYS <= set(out)
    assert out["atoms"] == 20 and out["grid"] == [12, 12, 12] and out["naive_voxels"] == 30
    assert out["descriptor_s"] > 0 and out["inference_s"] > 0
    assert out["total_s"] >= out["descriptor_s"] + out["inference_s"] - 1e-3
    expected = out["naive_s_per_voxel"] * 12**3 / out["total_s"]
    assert abs(out["speedup"] - expected) <= 1e-6 * expected
    assert out["peak_mem_gb"] > 0


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "--atoms", "0", "--grid", "8", "--device", "cpu"]) == 1
