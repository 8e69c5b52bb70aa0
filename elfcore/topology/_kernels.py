"""Compiled (numba) kernels of :mod:`elfcore.topology`.

Private module: the public functions in :mod:`elfcore.topology.mergetree` and
:mod:`elfcore.topology.critical` validate their input and call these kernels with
flat, contiguous arrays.

Conventions
-----------
* A grid of shape ``(Na, Nb, Nc)`` is flattened in C order: voxel ``(a, b, c)``
  has index ``(a * Nb + b) * Nc + c``.
* Voxels are connected to their 6 face neighbours, with periodic wrap-around. A
  step that leaves the cell through a face carries the lattice translation ``d``
  (an integer 3-vector, e.g. ``(+1, 0, 0)`` when going from ``a = Na - 1`` to
  ``a = 0``).
* Positions inside a spline evaluation are continuous grid indices (``x = i``
  at grid point ``i``).
"""
from __future__ import annotations

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir as _ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__: list[str] = []

# LLVM ≥ 15 has opaque pointers: the intrinsic is named for "ptr" instead of "i8*"
_PREFETCH = "llvm.prefetch.p0" if _llvm.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch(typingctx, arr, row):
    """Hint the CPU to load row ``row`` of the C-contiguous array ``arr`` into cache (for writing)."""

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]] + [zero] * (aryty.ndim - 1),
                                       wraparound=False)
        i8p = _ir.IntType(8).as_pointer()
        i32 = _ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32]),
                                            _PREFETCH)
        # rw = 1 (write), locality = 3 (keep in all cache levels), cache type = 1 (data)
        builder.call(fn, [builder.bitcast(ptr, i8p), _ir.Constant(i32, 1), _ir.Constant(i32, 3), _ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, row), codegen


# --------------------------------------------------------------------------- sorting
@njit(cache=True, nogil=True)
def _radix_pass(keys, idx, out_keys, out_idx, shift, nbins):
    n = keys.shape[0]
    counts = np.zeros(nbins + 1, dtype=np.int64)
    mask = nbins - 1
    sh = shift
    for i in range(n):
        counts[np.int64((keys[i] >> sh) & mask) + 1] += 1
    for b in range(nbins):
        counts[b + 1] += counts[b]
    for i in range(n):
        bkt = np.int64((keys[i] >> sh) & mask)
        pos = counts[bkt]
        out_keys[pos] = keys[i]
        out_idx[pos] = idx[i]
        counts[bkt] = pos + 1


def descending_keys(values: np.ndarray) -> np.ndarray:
    """Unsigned integer keys whose ascending order is the descending order of ``values``.

    float32 → uint32 keys, float64 → uint64 keys (IEEE-754 bit trick: flip all bits
    of negative numbers, set the sign bit of positive ones, then invert).
    """
    if values.dtype == np.float32:
        u = values.view(np.uint32)
        top = np.uint32(0x80000000)
    else:
        u = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
        top = np.uint64(1) << np.uint64(63)
    asc = np.where(u & top, ~u, u | top)
    return ~asc


@njit(cache=True, nogil=True)
def radix_argsort(keys):
    """Stable LSD radix argsort of unsigned integer ``keys`` (16-bit digits).

    Returns (n,) int64 indices, smallest key first.
    """
    n = keys.shape[0]
    idx = np.arange(n).astype(np.int64)
    k1 = keys.copy()
    k2 = np.empty_like(keys)
    i2 = np.empty_like(idx)
    npass = keys.itemsize * 8 // 16
    for p in range(npass):
        _radix_pass(k1, idx, k2, i2, p * 16, 1 << 16)
        k1, k2 = k2, k1
        idx, i2 = i2, idx
    return idx


def argsort_descending(values: np.ndarray) -> np.ndarray:
    """Stable argsort of a flat float array, largest value first (ties in index order)."""
    return radix_argsort(descending_keys(values))


# --------------------------------------------------------------------------- upsampling
@njit(cache=True, nogil=True)
def upsample_axis(coef, w):
    """Evaluate a periodic cubic B-spline along the middle axis at ``factor`` points per cell.

    ``coef`` (pre, n, post) are B-spline coefficients along axis 1, ``w`` (4, factor) the
    basis weights at the fractional offsets ``j / factor``; returns (pre, n·factor, post)
    with ``out[p, i·factor + j, q] = Σ_k w[k, j] coef[p, (i − 1 + k) mod n, q]``.
    """
    pre, n, post = coef.shape
    factor = w.shape[1]
    out = np.empty((pre, n * factor, post), dtype=coef.dtype)
    for p in range(pre):
        for i in range(n):
            i0 = (i - 1) % n
            i2 = (i + 1) % n
            i3 = (i + 2) % n
            for j in range(factor):
                w0 = w[0, j]
                w1 = w[1, j]
                w2 = w[2, j]
                w3 = w[3, j]
                row = i * factor + j
                for q in range(post):
                    out[p, row, q] = (((0.0 + coef[p, i0, q] * w0) + coef[p, i, q] * w1) + coef[p, i2, q] * w2) \
                        + coef[p, i3, q] * w3
    return out


# --------------------------------------------------------------------------- union-find sweep
# The sweep keeps every voxel's union-find state in one 32-byte record (a row of an
# (n, 8) int32 array), so that visiting a voxel or a neighbour touches one cache line
# instead of one line in each of seven arrays, and it prefetches the records of the voxel
# ``_AHEAD`` steps further in the order and of its six neighbours: on a 150³ grid the
# sweep is bound by memory latency, not arithmetic (together 2.7× faster on the
# 64-atom screening frame, 2 M voxels swept).
_AHEAD = 12
_PARENT = 0  # root of the voxel's tree; -1 not yet added, -2 excluded
_SIZE = 1  # tree size (valid at roots)
_OA = 2  # cell of the voxel's copy in its parent's frame (a, b, c)
_OB = 3
_OC = 4
_SLOT = 5  # row of the component's wrap basis, -1 none (valid at roots)
_REP = 6  # an atom of the component, -1 none (valid at roots)
_ATOM = 7  # first atom anchored at the voxel, -1 none


@njit(cache=True, nogil=True)
def _find(x, rec):
    """Root of ``x`` with path compression; returns (root, Ua, Ub, Uc) = cell of x's copy in the root frame."""
    r = x
    sa = 0
    sb = 0
    sc = 0
    while rec[r, _PARENT] != r:
        sa += rec[r, _OA]
        sb += rec[r, _OB]
        sc += rec[r, _OC]
        r = rec[r, _PARENT]
    # compress
    y = x
    ta = sa
    tb = sb
    tc = sc
    while rec[y, _PARENT] != r and y != r:
        nxt = rec[y, _PARENT]
        pa = rec[y, _OA]
        pb = rec[y, _OB]
        pc = rec[y, _OC]
        rec[y, _PARENT] = r
        rec[y, _OA] = ta
        rec[y, _OB] = tb
        rec[y, _OC] = tc
        ta -= pa
        tb -= pb
        tc -= pc
        y = nxt
    return r, sa, sb, sc


@njit(cache=True, nogil=True)
def _prefetch_voxel(rec, w, n, step_b, step_a):
    """Prefetch the records of voxel ``w`` and its face neighbours (wrap ignored: a hint only)."""
    _prefetch(rec, w)
    _prefetch(rec, w + 1 if w + 1 < n else w)
    _prefetch(rec, w - 1 if w >= 1 else w)
    _prefetch(rec, w + step_b if w + step_b < n else w)
    _prefetch(rec, w - step_b if w >= step_b else w)
    _prefetch(rec, w + step_a if w + step_a < n else w)
    _prefetch(rec, w - step_a if w >= step_a else w)


@njit(cache=True, nogil=True)
def _independent(basis, rank, wa, wb, wc):
    if wa == 0 and wb == 0 and wc == 0:
        return False
    if rank == 0:
        return True
    if rank == 1:
        xa = basis[0, 1] * wc - basis[0, 2] * wb
        xb = basis[0, 2] * wa - basis[0, 0] * wc
        xc = basis[0, 0] * wb - basis[0, 1] * wa
        return xa != 0 or xb != 0 or xc != 0
    if rank == 2:
        xa = basis[0, 1] * basis[1, 2] - basis[0, 2] * basis[1, 1]
        xb = basis[0, 2] * basis[1, 0] - basis[0, 0] * basis[1, 2]
        xc = basis[0, 0] * basis[1, 1] - basis[0, 1] * basis[1, 0]
        return xa * wa + xb * wb + xc * wc != 0
    return False


@njit(cache=True, nogil=True)
def sweep(order, shape, excluded, atom_at, atom_next, atom_voxel, n_atom_voxels, stop_early, n_seed):
    """Superlevel-set sweep with periodic union-find and wrap-vector tracking.

    Parameters
    ----------
    order : (m,) int64
        Flat voxel indices (C order) sorted by field value, largest first.
    shape : (3,) int64
    excluded : (n,) bool
        Voxels never added to the superlevel set.
    atom_at : (n,) int32
        First atom anchored at each voxel, -1 for none.
    atom_next : (n_atoms,) int32
        Next atom anchored at the same voxel, -1 at the end of the list.
    atom_voxel : (n_atoms,) int64
        Anchor voxel of each atom.
    n_atom_voxels : int
        Number of distinct, not excluded voxels holding atoms.
    stop_early : bool
        Stop once some component spans 3 dimensions and every atom sits in one
        3-periodic component (nothing that is reported can change below that).
    n_seed : int
        The first ``n_seed`` entries of ``order`` are a superlevel set given in
        memory order (cache friendly); percolation events are only recorded after
        them. 0 for a plain sweep.

    Returns
    -------
    perc_voxel : (3,) int64
        Voxel whose addition first made some component k+1 periodic (-1: never).
    perc_nbr : (3,) int64
        Neighbour it was joined with at that moment.
    ev_kind, ev_voxel, ev_a, ev_b, ev_vec
        Atom events in sweep order: kind 0 = the components of atoms a and b merge,
        the anchor voxel of b in cell ``vec`` joining the anchor voxel of a in cell 0;
        kind 1 = the component of atom a gains the wrap vector ``vec`` (possibly
        dependent on those it has).
    n_done : int
        Number of voxels of ``order`` processed.
    seed_rank : int
        Largest wrap rank of a component after the seed part.
    """
    na = shape[0]
    nb = shape[1]
    nc = shape[2]
    n = na * nb * nc
    rec = np.empty((n, 8), dtype=np.int32)
    for v in range(n):
        rec[v, _PARENT] = -2 if excluded[v] else -1
        rec[v, _SIZE] = 0
        rec[v, _OA] = 0
        rec[v, _OB] = 0
        rec[v, _OC] = 0
        rec[v, _SLOT] = -1
        rec[v, _REP] = -1
        rec[v, _ATOM] = atom_at[v]
    cap = 1024
    basis = np.zeros((cap, 3, 3), dtype=np.int64)
    brank = np.zeros(cap, dtype=np.int64)
    nslot = 0

    n_atoms = atom_next.shape[0]
    max_ev = 12 * n_atoms + 16
    ev_kind = np.zeros(max_ev, dtype=np.int8)
    ev_voxel = np.zeros(max_ev, dtype=np.int64)
    ev_a = np.zeros(max_ev, dtype=np.int32)
    ev_b = np.zeros(max_ev, dtype=np.int32)
    ev_vec = np.zeros((max_ev, 3), dtype=np.int64)
    nev = 0

    perc_voxel = np.full(3, -1, dtype=np.int64)
    perc_nbr = np.full(3, -1, dtype=np.int64)
    grank = 0
    atom_comps = 0
    atom_vox_seen = 0
    last_atom_voxel = -1
    n_done = 0

    seed_rank = 0
    for t in range(order.shape[0]):
        if t == n_seed:
            seed_rank = grank
        if t + _AHEAD < order.shape[0]:
            _prefetch_voxel(rec, order[t + _AHEAD], n, nc, nb * nc)
        v = order[t]
        n_done = t + 1
        if rec[v, _PARENT] == -2:
            continue
        rec[v, _PARENT] = v
        rec[v, _SIZE] = 1
        if rec[v, _ATOM] >= 0:
            a0 = rec[v, _ATOM]
            rec[v, _REP] = a0
            atom_comps += 1
            atom_vox_seen += 1
            last_atom_voxel = v
            nx = atom_next[a0]
            while nx >= 0:
                ev_kind[nev] = 0
                ev_voxel[nev] = v
                ev_a[nev] = a0
                ev_b[nev] = nx
                nev += 1
                nx = atom_next[nx]
        c0 = v % nc
        tmp = v // nc
        b0 = tmp % nb
        a0i = tmp // nb
        for k in range(6):
            da = 0
            db = 0
            dc = 0
            ai = a0i
            bi = b0
            ci = c0
            if k == 0:
                ai += 1
                if ai == na:
                    ai = 0
                    da = 1
            elif k == 1:
                ai -= 1
                if ai < 0:
                    ai = na - 1
                    da = -1
            elif k == 2:
                bi += 1
                if bi == nb:
                    bi = 0
                    db = 1
            elif k == 3:
                bi -= 1
                if bi < 0:
                    bi = nb - 1
                    db = -1
            elif k == 4:
                ci += 1
                if ci == nc:
                    ci = 0
                    dc = 1
            else:
                ci -= 1
                if ci < 0:
                    ci = nc - 1
                    dc = -1
            u = (ai * nb + bi) * nc + ci
            if rec[u, _PARENT] < 0:
                continue
            rv, va, vb, vc = _find(v, rec)
            ru, ua, ub, uc = _find(u, rec)
            if rv == ru:
                wa = va + da - ua
                wb = vb + db - ub
                wc = vc + dc - uc
                s = rec[rv, _SLOT]
                r = 0 if s < 0 else brank[s]
                if r < 3 and _independent(basis[max(s, 0)], r, wa, wb, wc):
                    if s < 0:
                        if nslot == cap:
                            nb2 = np.zeros((2 * cap, 3, 3), dtype=np.int64)
                            nb2[:cap] = basis
                            br2 = np.zeros(2 * cap, dtype=np.int64)
                            br2[:cap] = brank
                            basis = nb2
                            brank = br2
                            cap *= 2
                        s = nslot
                        nslot += 1
                        rec[rv, _SLOT] = s
                    basis[s, r, 0] = wa
                    basis[s, r, 1] = wb
                    basis[s, r, 2] = wc
                    brank[s] = r + 1
                    if rec[rv, _REP] >= 0:
                        ev_kind[nev] = 1
                        ev_voxel[nev] = v
                        ev_a[nev] = rec[rv, _REP]
                        ev_b[nev] = rec[rv, _REP]
                        ev_vec[nev, 0] = wa
                        ev_vec[nev, 1] = wb
                        ev_vec[nev, 2] = wc
                        nev += 1
                    if r + 1 > grank:
                        for q in range(grank, r + 1):
                            if t < n_seed:
                                continue
                            perc_voxel[q] = v
                            perc_nbr[q] = u
                        grank = r + 1
                continue
            # merge two components: the smaller under the larger
            if rec[rv, _SIZE] >= rec[ru, _SIZE]:
                big = rv
                small = ru
                ta = va + da - ua
                tb = vb + db - ub
                tc = vc + dc - uc
            else:
                big = ru
                small = rv
                ta = ua - da - va
                tb = ub - db - vb
                tc = uc - dc - vc
            rec[small, _PARENT] = big
            rec[small, _OA] = ta
            rec[small, _OB] = tb
            rec[small, _OC] = tc
            rec[big, _SIZE] += rec[small, _SIZE]
            # merge wrap bases
            sb_ = rec[big, _SLOT]
            ss_ = rec[small, _SLOT]
            rbig = 0 if sb_ < 0 else brank[sb_]
            rsmall = 0 if ss_ < 0 else brank[ss_]
            rank_big0 = rbig
            if rsmall > 0 and rbig < 3:
                if sb_ < 0:
                    rec[big, _SLOT] = ss_
                    sb_ = ss_
                    rbig = rsmall
                else:
                    for q in range(rsmall):
                        w0 = basis[ss_, q, 0]
                        w1 = basis[ss_, q, 1]
                        w2 = basis[ss_, q, 2]
                        if rbig < 3 and _independent(basis[sb_], rbig, w0, w1, w2):
                            basis[sb_, rbig, 0] = w0
                            basis[sb_, rbig, 1] = w1
                            basis[sb_, rbig, 2] = w2
                            rbig += 1
                    brank[sb_] = rbig
            rep_big = rec[big, _REP]
            rep_small = rec[small, _REP]
            if rep_big >= 0 and rep_small >= 0:
                atom_comps -= 1
                _, xa, xb, xc = _find(atom_voxel[rep_big], rec)
                _, ya, yb, yc = _find(atom_voxel[rep_small], rec)
                ev_kind[nev] = 0
                ev_voxel[nev] = v
                ev_a[nev] = rep_big
                ev_b[nev] = rep_small
                ev_vec[nev, 0] = ya - xa
                ev_vec[nev, 1] = yb - xb
                ev_vec[nev, 2] = yc - xc
                nev += 1
            elif rep_big >= 0 or rep_small >= 0:
                a_rep = rep_big if rep_big >= 0 else rep_small
                r_atomside = rank_big0 if rep_big >= 0 else rsmall
                if rbig > r_atomside:
                    # the atom-free side brought new wrap vectors: hand the whole merged
                    # basis to the replay, which keeps the independent ones
                    for q in range(rbig):
                        ev_kind[nev] = 1
                        ev_voxel[nev] = v
                        ev_a[nev] = a_rep
                        ev_b[nev] = a_rep
                        ev_vec[nev, 0] = basis[sb_, q, 0]
                        ev_vec[nev, 1] = basis[sb_, q, 1]
                        ev_vec[nev, 2] = basis[sb_, q, 2]
                        nev += 1
                rec[big, _REP] = a_rep
            if rbig > grank:
                for q in range(grank, rbig):
                    if t < n_seed:
                        continue
                    perc_voxel[q] = v
                    perc_nbr[q] = u
                grank = rbig
        if stop_early and grank == 3 and atom_vox_seen == n_atom_voxels:
            if n_atom_voxels == 0:
                break
            if atom_comps == 1:
                ra, _, _, _ = _find(last_atom_voxel, rec)
                s = rec[ra, _SLOT]
                if s >= 0 and brank[s] == 3:
                    break
    if n_seed >= order.shape[0]:
        seed_rank = grank
    return (perc_voxel, perc_nbr, ev_kind[:nev], ev_voxel[:nev], ev_a[:nev], ev_b[:nev], ev_vec[:nev],
            n_done, seed_rank)


@njit(cache=True, nogil=True)
def edge_sweep(n_nodes, eu, ev, ed):
    """Periodic union-find over a graph whose edges carry lattice translations.

    Edge ``e`` joins node ``eu[e]`` in cell 0 to node ``ev[e]`` in cell ``ed[e]``.
    Edges are added in the given order.

    Returns
    -------
    first_edge : (3,) int64
        Index of the edge after which some component first has k+1 independent
        wrap vectors (-1: never).
    """
    rec = np.zeros((n_nodes, 8), dtype=np.int32)
    for x in range(n_nodes):
        rec[x, _PARENT] = x
        rec[x, _SIZE] = 1
    basis = np.zeros((n_nodes, 3, 3), dtype=np.int64)
    brank = np.zeros(n_nodes, dtype=np.int64)
    first = np.full(3, -1, dtype=np.int64)
    grank = 0
    for e in range(eu.shape[0]):
        ru, ua, ub, uc = _find(eu[e], rec)
        rv, va, vb, vc = _find(ev[e], rec)
        if ru == rv:
            wa = ua + ed[e, 0] - va
            wb = ub + ed[e, 1] - vb
            wc = uc + ed[e, 2] - vc
            r = brank[ru]
            if r < 3 and _independent(basis[ru], r, wa, wb, wc):
                basis[ru, r, 0] = wa
                basis[ru, r, 1] = wb
                basis[ru, r, 2] = wc
                brank[ru] = r + 1
            root = ru
        else:
            if rec[ru, _SIZE] >= rec[rv, _SIZE]:
                big = ru
                small = rv
                ta = ua + ed[e, 0] - va
                tb = ub + ed[e, 1] - vb
                tc = uc + ed[e, 2] - vc
            else:
                big = rv
                small = ru
                ta = va - ed[e, 0] - ua
                tb = vb - ed[e, 1] - ub
                tc = vc - ed[e, 2] - uc
            rec[small, _PARENT] = big
            rec[small, _OA] = ta
            rec[small, _OB] = tb
            rec[small, _OC] = tc
            rec[big, _SIZE] += rec[small, _SIZE]
            for q in range(brank[small]):
                r = brank[big]
                if r < 3 and _independent(basis[big], r, basis[small, q, 0], basis[small, q, 1],
                                          basis[small, q, 2]):
                    basis[big, r] = basis[small, q]
                    brank[big] = r + 1
            root = big
        if brank[root] > grank:
            for q in range(grank, brank[root]):
                first[q] = e
            grank = brank[root]
            if grank == 3:
                break
    return first


# --------------------------------------------------------------------------- tricubic B-spline
@njit(cache=True, nogil=True)
def _bweights(t, w, dw, ddw):
    s = 1.0 - t
    t2 = t * t
    t3 = t2 * t
    w[0] = s * s * s / 6.0
    w[1] = (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0
    w[2] = (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0
    w[3] = t3 / 6.0
    dw[0] = -0.5 * s * s
    dw[1] = 1.5 * t2 - 2.0 * t
    dw[2] = -1.5 * t2 + t + 0.5
    dw[3] = 0.5 * t2
    ddw[0] = s
    ddw[1] = 3.0 * t - 2.0
    ddw[2] = -3.0 * t + 1.0
    ddw[3] = t


@njit(cache=True, nogil=True)
def spline_eval(coef, x, y, z, out):
    """Value, gradient and Hessian of the periodic cubic B-spline with coefficients ``coef``.

    ``(x, y, z)`` are continuous grid indices. ``out`` (10,) receives
    ``f, fx, fy, fz, fxx, fyy, fzz, fxy, fxz, fyz`` (derivatives per grid step).
    """
    na, nb, nc = coef.shape
    fx = np.floor(x)
    fy = np.floor(y)
    fz = np.floor(z)
    ix = int(fx)
    iy = int(fy)
    iz = int(fz)
    wx = np.empty(4)
    dwx = np.empty(4)
    ddwx = np.empty(4)
    wy = np.empty(4)
    dwy = np.empty(4)
    ddwy = np.empty(4)
    wz = np.empty(4)
    dwz = np.empty(4)
    ddwz = np.empty(4)
    _bweights(x - fx, wx, dwx, ddwx)
    _bweights(y - fy, wy, dwy, ddwy)
    _bweights(z - fz, wz, dwz, ddwz)
    for q in range(10):
        out[q] = 0.0
    for i in range(4):
        ii = (ix - 1 + i) % na
        for j in range(4):
            jj = (iy - 1 + j) % nb
            # contract over z first
            c0 = 0.0
            c1 = 0.0
            c2 = 0.0
            for k in range(4):
                kk = (iz - 1 + k) % nc
                cv = coef[ii, jj, kk]
                c0 += cv * wz[k]
                c1 += cv * dwz[k]
                c2 += cv * ddwz[k]
            wxy = wx[i] * wy[j]
            out[0] += wxy * c0
            out[1] += dwx[i] * wy[j] * c0
            out[2] += wx[i] * dwy[j] * c0
            out[3] += wxy * c1
            out[4] += ddwx[i] * wy[j] * c0
            out[5] += wx[i] * ddwy[j] * c0
            out[6] += wxy * c2
            out[7] += dwx[i] * dwy[j] * c0
            out[8] += dwx[i] * wy[j] * c1
            out[9] += wx[i] * dwy[j] * c1


@njit(cache=True, nogil=True)
def spline_values(coef, pts):
    """Values (m,) and gradients (m, 3) of the spline at continuous grid indices ``pts`` (m, 3)."""
    m = pts.shape[0]
    val = np.empty(m)
    grad = np.empty((m, 3))
    out = np.empty(10)
    for p in range(m):
        spline_eval(coef, pts[p, 0], pts[p, 1], pts[p, 2], out)
        val[p] = out[0]
        grad[p, 0] = out[1]
        grad[p, 1] = out[2]
        grad[p, 2] = out[3]
    return val, grad


@njit(cache=True, nogil=True)
def spline_info(coef, pts):
    """Value, gradient and Hessian (m, 10) of the spline at ``pts`` (m, 3), as ``spline_eval``."""
    m = pts.shape[0]
    info = np.empty((m, 10))
    out = np.empty(10)
    for p in range(m):
        spline_eval(coef, pts[p, 0], pts[p, 1], pts[p, 2], out)
        for q in range(10):
            info[p, q] = out[q]
    return info


@njit(cache=True, nogil=True)
def newton_cp(coef, starts, max_step, max_dist, tol, max_iter):
    """Newton iteration on the spline gradient from each start point.

    Parameters
    ----------
    coef : (Na, Nb, Nc) float64
        B-spline coefficients (periodic).
    starts : (m, 3) float64
        Start points in continuous grid indices.
    max_step : float
        Largest Newton step per iteration (grid steps, infinity norm).
    max_dist : float
        Give up when the iterate moves farther than this from its start.
    tol : float
        Converged when the step is below ``tol`` grid steps.

    Returns
    -------
    pos : (m, 3) float64
    info : (m, 10) float64
        Spline value, gradient and Hessian at ``pos`` (as ``spline_eval``).
    ok : (m,) bool
    """
    m = starts.shape[0]
    pos = np.empty((m, 3))
    info = np.empty((m, 10))
    ok = np.zeros(m, dtype=np.bool_)
    out = np.empty(10)
    h = np.empty((3, 3))
    g = np.empty(3)
    for p in range(m):
        x = starts[p, 0]
        y = starts[p, 1]
        z = starts[p, 2]
        conv = False
        for it in range(max_iter):
            spline_eval(coef, x, y, z, out)
            g[0] = out[1]
            g[1] = out[2]
            g[2] = out[3]
            h[0, 0] = out[4]
            h[1, 1] = out[5]
            h[2, 2] = out[6]
            h[0, 1] = out[7]
            h[1, 0] = out[7]
            h[0, 2] = out[8]
            h[2, 0] = out[8]
            h[1, 2] = out[9]
            h[2, 1] = out[9]
            det = np.linalg.det(h)
            if abs(det) < 1e-300:
                break
            step = np.linalg.solve(h, g)
            big = max(abs(step[0]), max(abs(step[1]), abs(step[2])))
            if big > max_step:
                step *= max_step / big
            x -= step[0]
            y -= step[1]
            z -= step[2]
            if (abs(x - starts[p, 0]) > max_dist or abs(y - starts[p, 1]) > max_dist
                    or abs(z - starts[p, 2]) > max_dist):
                break
            if big < tol:
                conv = True
                break
        spline_eval(coef, x, y, z, out)
        pos[p, 0] = x
        pos[p, 1] = y
        pos[p, 2] = z
        for q in range(10):
            info[p, q] = out[q]
        ok[p] = conv
    return pos, info, ok


@njit(cache=True, nogil=True)
def candidate_cells(gx, gy, gz):
    """Grid cells whose 8 corners show a sign change in every gradient component.

    ``gx, gy, gz`` (Na, Nb, Nc) are gradient components at the grid points. A zero of
    the (trilinear) gradient inside cell ``[i, i+1] x [j, j+1] x [k, k+1]`` needs a
    sign change of each component over the 8 corners. Returns (m, 3) int64 corner indices.
    """
    na, nb, nc = gx.shape
    out = np.empty((1024, 3), dtype=np.int64)
    m = 0
    for i in range(na):
        i1 = (i + 1) % na
        for j in range(nb):
            j1 = (j + 1) % nb
            for k in range(nc):
                k1 = (k + 1) % nc
                good = True
                for comp in range(3):
                    g = gx if comp == 0 else (gy if comp == 1 else gz)
                    pos = False
                    neg = False
                    for a in (i, i1):
                        for b in (j, j1):
                            for c in (k, k1):
                                val = g[a, b, c]
                                if val >= 0.0:
                                    pos = True
                                if val <= 0.0:
                                    neg = True
                    if not (pos and neg):
                        good = False
                        break
                if good:
                    if m == out.shape[0]:
                        o2 = np.empty((2 * m, 3), dtype=np.int64)
                        o2[:m] = out
                        out = o2
                    out[m, 0] = i
                    out[m, 1] = j
                    out[m, 2] = k
                    m += 1
    return out[:m]


@njit(cache=True, nogil=True)
def ascend(coef, starts, metric_inv, step, min_step, max_steps):
    """Steepest ascent of the spline from each start point until it stalls at a maximum.

    Parameters
    ----------
    coef : (Na, Nb, Nc) float64
        Periodic B-spline coefficients.
    starts : (m, 3) float64
        Start points in continuous grid indices (unwrapped; may lie outside the cell).
    metric_inv : (3, 3) float64
        ``A.T @ A`` with ``idx = x_cart @ A``: maps the index-space gradient to the
        Cartesian steepest-ascent direction expressed in grid indices.
    step, min_step : float
        Initial and final step length in Å. The step is halved whenever the value
        stops increasing.
    max_steps : int

    Returns
    -------
    (m, 3) float64 end points, unwrapped grid indices.
    """
    m = starts.shape[0]
    ends = np.empty((m, 3))
    out = np.empty(10)
    metric = np.linalg.inv(metric_inv)
    for p in range(m):
        x = starts[p, 0]
        y = starts[p, 1]
        z = starts[p, 2]
        h = step
        spline_eval(coef, x, y, z, out)
        fcur = out[0]
        for it in range(max_steps):
            dx = metric_inv[0, 0] * out[1] + metric_inv[0, 1] * out[2] + metric_inv[0, 2] * out[3]
            dy = metric_inv[1, 0] * out[1] + metric_inv[1, 1] * out[2] + metric_inv[1, 2] * out[3]
            dz = metric_inv[2, 0] * out[1] + metric_inv[2, 1] * out[2] + metric_inv[2, 2] * out[3]
            norm2 = (dx * (metric[0, 0] * dx + metric[0, 1] * dy + metric[0, 2] * dz)
                     + dy * (metric[1, 0] * dx + metric[1, 1] * dy + metric[1, 2] * dz)
                     + dz * (metric[2, 0] * dx + metric[2, 1] * dy + metric[2, 2] * dz))
            if norm2 <= 0.0:
                break
            sc = h / np.sqrt(norm2)
            xn = x + sc * dx
            yn = y + sc * dy
            zn = z + sc * dz
            spline_eval(coef, xn, yn, zn, out)
            if out[0] > fcur:
                x = xn
                y = yn
                z = zn
                fcur = out[0]
            else:
                h *= 0.5
                if h < min_step:
                    break
                spline_eval(coef, x, y, z, out)
        ends[p, 0] = x
        ends[p, 1] = y
        ends[p, 2] = z
    return ends


# --------------------------------------------------------------------------- PL critical points
# The 14 neighbours of a vertex in the Freudenthal triangulation of the cubic grid (each cube cut
# into 6 tetrahedra along its (1,1,1) diagonal): ±e with e a non-zero 0/1 vector.
_FREUD = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1],
     [-1, 0, 0], [0, -1, 0], [0, 0, -1], [-1, -1, 0], [0, -1, -1], [-1, 0, -1], [-1, -1, -1]],
    dtype=np.int64,
)


def _freudenthal_link_edges() -> np.ndarray:
    """Pairs (i, j) of neighbour offsets joined by an edge of the vertex link."""
    offs = {tuple(o) for o in _FREUD.tolist()}
    pairs = []
    for i in range(14):
        for j in range(i + 1, 14):
            d = tuple((_FREUD[j] - _FREUD[i]).tolist())
            if d in offs:
                pairs.append((i, j))
    return np.array(pairs, dtype=np.int64)


_LINK_EDGES = _freudenthal_link_edges()


@njit(cache=True, nogil=True)
def _link_components(member, edges):
    parent = np.arange(14)
    for e in range(edges.shape[0]):
        i, j = edges[e, 0], edges[e, 1]
        if member[i] and member[j]:
            ri = i
            while parent[ri] != ri:
                ri = parent[ri]
            rj = j
            while parent[rj] != rj:
                rj = parent[rj]
            if ri != rj:
                parent[rj] = ri
    n = 0
    for i in range(14):
        if member[i] and parent[i] == i:
            n += 1
    return n


@njit(cache=True, nogil=True)
def pl_critical_census(values, offsets, edges):
    """Critical vertices of the piecewise-linear interpolant on the Freudenthal triangulation.

    Ties are broken by the flat index (simulation of simplicity), so every vertex is
    classified. Returns ``(counts, kinds_per_vertex)``: ``counts[k]`` = number of
    critical points with k negative directions, multi-saddles counted with their
    multiplicity (index-1: components of the lower link − 1; index-2: components of
    the upper link − 1), so that counts[3] − counts[2] + counts[1] − counts[0] = 0 on
    the 3-torus; ``kinds_per_vertex`` is 3 (max), 0 (min), 2/1 (saddle, the larger
    multiplicity wins), −1 (regular).
    """
    na, nb, nc = values.shape
    counts = np.zeros(4, dtype=np.int64)
    kinds = np.full(values.shape, -1, dtype=np.int8)
    lower = np.zeros(14, dtype=np.bool_)
    upper = np.zeros(14, dtype=np.bool_)
    for a in range(na):
        for b in range(nb):
            for c in range(nc):
                v = values[a, b, c]
                me = (a * nb + b) * nc + c
                n_low = 0
                for k in range(14):
                    aa = (a + offsets[k, 0]) % na
                    bb = (b + offsets[k, 1]) % nb
                    cc = (c + offsets[k, 2]) % nc
                    w = values[aa, bb, cc]
                    other = (aa * nb + bb) * nc + cc
                    is_low = w < v or (w == v and other < me)
                    lower[k] = is_low
                    upper[k] = not is_low
                    if is_low:
                        n_low += 1
                if n_low == 0:
                    counts[0] += 1
                    kinds[a, b, c] = 0
                    continue
                if n_low == 14:
                    counts[3] += 1
                    kinds[a, b, c] = 3
                    continue
                cl = _link_components(lower, edges)
                cu = _link_components(upper, edges)
                if cl > 1:
                    counts[1] += cl - 1
                if cu > 1:
                    counts[2] += cu - 1
                if cl > 1 or cu > 1:
                    kinds[a, b, c] = 2 if cu >= cl else 1
    return counts, kinds
