"""Process memory policy for workers that allocate and free large arrays again and again."""
from __future__ import annotations

__all__ = ["WORKER_MALLOC_ENV"]

#: Environment for worker processes (read by glibc's malloc at process start).
#:
#: One screening frame allocates and frees ~600 MB in blocks of tens of MB
#: (descriptor slabs, the union-find records of the topology sweep). By default
#: glibc serves every block over 32 MB by a fresh ``mmap`` and unmaps it on free,
#: so each frame pays ~150,000 page faults: 0.3–0.5 s of system time on a
#: 1.4–1.8 s 64-atom frame on a 2-core CPU. One arena, no ``mmap`` and no heap
#: trimming let later frames reuse the same pages; a worker keeps its peak
#: resident size. ``elfcore screen`` starts its local cluster with these; give
#: them to the workers of an external cluster too (``env MALLOC_ARENA_MAX=1 ...
#: dask worker ...``). Other C libraries ignore them.
WORKER_MALLOC_ENV: dict[str, str] = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),
}
