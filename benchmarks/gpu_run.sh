#!/usr/bin/env bash
# One short GPU run: CUDA tests, full-grid benchmark, scaling fits and the zoo rebuild.
#
# Run from the repository root on a machine with a CUDA device and no network:
#
#     OUT=/some/dir bash benchmarks/gpu_run.sh
#
# Writes into $OUT (at most 8 files): log.txt (everything), pytest_gpu.txt,
# bench_gpu.json, scaling_gpu.json, zoo_build.json, zoo_list.txt, zoo.tar.
# Missing pure-Python dependencies (ase, h5netcdf) are installed offline from
# wheels in .wheels/ (fetched beforehand with `pip download --no-deps
# --only-binary=:all: --python-version 3.12 ... -d .wheels ase h5netcdf`) into a
# private --target folder; elfcore itself runs from the source tree.
#
# Every step runs even if an earlier one failed; each has its own time limit,
# cut to what is left of GPU_RUN_BUDGET_S (default 390 s) for the whole script.
#
# GPU_RUN_QUICK=1 shrinks every size (atoms, grids, voxels, epochs) and uses the
# CPU: a dry run that checks every command line without a GPU.
set -u

OUT=${OUT:-$PWD/gpu_out}
PY=${PY:-python3}
QUICK=${GPU_RUN_QUICK:-0}
BUDGET=${GPU_RUN_BUDGET_S:-$([[ $QUICK == 1 ]] && echo 3000 || echo 390)}
SITE=${GPU_RUN_SITE:-/tmp/elfcore_site}
ZOO_DIR=${GPU_RUN_ZOO_DIR:-/tmp/elfcore_zoo}
DESC_CACHE=${GPU_RUN_DESC_CACHE:-/tmp/elfcore_desc}
T0=$(date +%s)
FAILED=()

mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ $QUICK == 1 ]]; then
    DEV=cpu
    BENCH=(--atoms 20 --grid 12 --repeats 2 --naive-voxels 50)
    SCALING=(--atoms 16,32 --grids 8,12 --repeats 1 --fixed-grid 8 --spacing 0.5)
    ZOO=(--epochs 1 --voxels 300)
    LIM_TEST=300 LIM_BENCH=120 LIM_ZOO=600 LIM_SCALING=300
else
    DEV=cuda
    BENCH=(--atoms 500 --grid 192 --repeats 5)
    SCALING=(--atoms 64,128,250,500,1000,2000 --grids 48,64,96,128,160,192 --repeats 3)
    ZOO=()
    LIM_TEST=90 LIM_BENCH=90 LIM_ZOO=210 LIM_SCALING=150
fi

# step NAME MAX_S STDOUT_FILE CMD... : run CMD under a time limit, stdout to STDOUT_FILE ('-' = log)
step() {
    local name=$1 max=$2 dest=$3 rc start left lim
    shift 3
    left=$((BUDGET - ($(date +%s) - T0)))
    lim=$((max < left ? max : left))
    if ((lim < 5)); then
        echo "=== [$name] SKIPPED: budget of ${BUDGET}s spent"
        FAILED+=("$name(skipped)")
        return
    fi
    echo "=== [$name] start, limit ${lim}s (t=$(($(date +%s) - T0))s): $*"
    start=$(date +%s)
    if [[ $dest == - ]]; then
        timeout --kill-after=5 "$lim" "$@"
    else
        timeout --kill-after=5 "$lim" "$@" >"$dest"
    fi
    rc=$?
    echo "=== [$name] rc=$rc after $(($(date +%s) - start))s"
    ((rc == 0)) || FAILED+=("$name(rc=$rc)")
}

export PY

# 1. offline install of what the image lacks
if [[ ${GPU_RUN_FORCE_INSTALL:-0} == 1 ]] || ! "$PY" -c "import ase, h5netcdf" 2>/dev/null; then
    step install 60 - "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .wheels/ase-*.whl .wheels/h5netcdf-*.whl
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH#"$PWD"}"
fi

# 2. machine
step machine 30 - bash -c 'nvidia-smi -L; "$PY" -c "import sys, torch, elfcore; print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"\")"'

# 3. tests marked gpu (the app tests need Panel and a browser: not collected)
step pytest_gpu "$LIM_TEST" "$OUT/pytest_gpu.txt" "$PY" -m pytest -m gpu -q -p no:cacheprovider --ignore=tests/app tests/
tail -n 5 "$OUT/pytest_gpu.txt" 2>/dev/null

# 4. benchmark and scaling (zoo in between: it matters more than the scaling fit)
step bench "$LIM_BENCH" "$OUT/bench_gpu.json" "$PY" -m elfcore.cli bench "${BENCH[@]}" --device "$DEV" --json
cat "$OUT/bench_gpu.json" 2>/dev/null; echo

# 5. zoo on the training snapshots of the paper's three pressures (full ZOO_SCHEDULE unless quick);
#    the shipped zoo was trained before the 115.1/138.5 GPa reruns, on fluid_p076/p103/p120_t0200
#    (assets/README.md)
rm -rf "$ZOO_DIR"
mkdir -p "$ZOO_DIR"
step zoo_build "$LIM_ZOO" "$OUT/zoo_build.json" "$PY" -m elfcore.cli zoo build \
    assets/data/fluid_p076_t0200.nc assets/data/fluid_p115_t0200.nc assets/data/fluid_p138_t0200.nc \
    "${ZOO[@]}" --device "$DEV" --dir "$ZOO_DIR" --no-resume --cache-dir "$DESC_CACHE" --json
step zoo_list 30 "$OUT/zoo_list.txt" "$PY" -m elfcore.cli zoo list --dir "$ZOO_DIR"
cat "$OUT/zoo_list.txt" 2>/dev/null
step zoo_tar 30 - tar -cf "$OUT/zoo.tar" -C "$ZOO_DIR" .

step scaling "$LIM_SCALING" "$OUT/scaling_gpu.json" "$PY" benchmarks/scaling.py --device "$DEV" "${SCALING[@]}"

echo "=== done after $(($(date +%s) - T0))s; failed: ${FAILED[*]:-none}"
ls -la "$OUT"
