#!/usr/bin/env bash
# The full `elfcore reproduce` run on a CUDA machine without network access.
#
#     OUT=/some/dir bash benchmarks/gpu_reproduce.sh
#
# Runs in the repository root and writes the figures to docs/figures and the tables into
# docs/results.md of that copy (so the recorded command names the repository paths), then copies
# them, the summary JSON and a log into $OUT. ase and h5netcdf are installed offline from the wheels
# in .wheels/ (see benchmarks/gpu_run.sh) when the machine lacks them.
# GPU_RUN_QUICK=1: the --quick preset on the CPU (a dry run of the command lines).
# POOL_TRAIN="a.nc b.nc ...": first also train one paper-protocol MLP (50,000 voxels per snapshot, 80 epochs,
# seed 0) on these snapshots -> $OUT/pool.safetensors (the larger-training-set variant, scored on the CPU later).
# GPU_RUN_BENCH=1: first `elfcore bench --atoms 500 --grid 192 --repeats 5 --device cuda --json` -> $OUT/bench_gpu.json.
set -u
OUT=${OUT:-$PWD/gpu_out}
PY=${PY:-python3}
SITE=${GPU_RUN_SITE:-/tmp/elfcore_site}
LIMIT=${GPU_RUN_LIMIT_S:-480}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import ase, h5netcdf" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
        .wheels/ase-*.whl .wheels/h5netcdf-*.whl
fi
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [[ ${GPU_RUN_QUICK:-0} == 1 ]]; then
    ARGS=(--quick --device cpu --threads 1)
else
    ARGS=(--device cuda)
fi
nvidia-smi -L 2>/dev/null
if [[ ${GPU_RUN_BENCH:-0} == 1 ]]; then
    timeout --kill-after=10 90 "$PY" -m elfcore.cli bench --atoms 500 --grid 192 --repeats 5 --device cuda --json \
        >"$OUT/bench_gpu.json"
    echo "bench rc=$?"; cat "$OUT/bench_gpu.json"
fi
if [[ -n ${POOL_TRAIN:-} ]]; then
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout --kill-after=10 "${POOL_LIMIT_S:-150}" "$PY" -m elfcore.cli train $POOL_TRAIN \
        --device "$([[ ${GPU_RUN_QUICK:-0} == 1 ]] && echo cpu || echo cuda)" --seed 0 --out "$OUT/pool.safetensors" \
        $([[ ${GPU_RUN_QUICK:-0} == 1 ]] && echo "--voxels 500 --epochs 1")
    echo "pool training rc=$? after $(($(date +%s) - start)) s"
fi
start=$(date +%s)
timeout --kill-after=10 "$LIMIT" "$PY" -m elfcore.cli reproduce "${ARGS[@]}" --out docs/figures --data assets/data \
    --results docs/results.md
echo "reproduce rc=$? after $(($(date +%s) - start)) s"
cp docs/results.md docs/figures/fig_s[123]_*.png docs/figures/reproduce.json "$OUT"/ 2>/dev/null
ls -la "$OUT"
