"""Effective state-size (ESS) of causal input-varying linear operators.

Parnichkun et al., "Quantifying Memory Utilization with Effective State-Size",
ICML 2025 (arXiv 2504.19561). A causal mixer is y = T(u) u with T lower
triangular (L, L) per channel. At split i the block T[i:, :i] maps past inputs
to present and future outputs; its rank is the smallest state any recurrence
needs at step i (minimal-realization theory).

- tolerance ESS: number of singular values of the block above a tolerance,
  with `atol`/`rtol` meaning exactly what they mean in `torch.linalg.matrix_rank`;
- entropy ESS: exp of the entropy of sigma / ||sigma||_1 (Roy & Vetterli's
  effective rank), 0 for an all-zero block. Differentiable (through svdvals of
  the dense blocks; a Semiseparable that requires grad is materialized for it).

Operators come either dense `(..., L, L)` or as a `Semiseparable`, whose blocks
are products of two thin factors: its ESS is computed from N x N cores and the
L x L matrix is never built.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache

import torch
from torch import Tensor

# the operator types live with the mixers; re-exported here, where users have imported them from
from architectures.operators import MixerOperator, Semiseparable, _high_precision  # noqa: F401

KINDS = ("tolerance", "entropy")

# Headline means skip the splits near both ends, where min(i, L - i) rather than
# the mixer caps the rank: the interior window is [L * lo, L * hi).
DEFAULT_WINDOW = (0.25, 0.75)
# Tolerances that measure use rather than floating-point rank: a singular value counts if it is
# above rtol times the largest singular value of its own block ("block", matrix_rank's rule with a
# larger rtol) or of the channel's whole operator, over all splits ("operator": a block whose
# values are all tiny next to what the channel carries elsewhere counts as unused).
RELATIVE_TOLERANCES = (1e-4, 1e-3, 1e-2, 1e-1)


# --------------------------------------------------------------------------- singular values


def _check_positions(length: int, positions: Sequence[int] | Tensor | None) -> list[int]:
    if positions is None:
        return list(range(length))
    pos = [int(p) for p in (positions.tolist() if isinstance(positions, Tensor) else positions)]
    bad = [p for p in pos if not 0 <= p < length]
    if bad:
        raise ValueError(f"positions must lie in [0, {length}); got {bad[:5]}")
    return pos


def _triangular_factor_scan(rows: Tensor, decay: Tensor) -> Tensor:
    """R_j with R_j^T R_j = sum_{s<=j} (x_s * prod_{m=s+1..j} a_m)(...)^T, for rows x = `rows`.

    Incremental QR: R_j = qr([R_{j-1} * a_j ; x_j]).R. Equivalent to the Gram
    recursion but without squaring the condition number, so small singular
    values stay accurate to machine precision (as in a dense SVD).
    `rows`, `decay`: (B, L, N). Returns (B, L, N, N).
    """
    batch, length, n = rows.shape
    factor = rows.new_zeros(batch, n, n)
    out = rows.new_empty(batch, length, n, n)
    for j in range(length):
        stacked = torch.cat([factor * decay[:, j, None, :], rows[:, j, None, :]], dim=-2)
        factor = torch.linalg.qr(stacked, mode="r").R
        out[:, j] = factor
    return out


def _semiseparable_singular_values(op: Semiseparable, positions: list[int]) -> Tensor:
    """Singular values `(B, P, N)` of the blocks T[i:, :i] from N x N cores, in float64."""
    q = _high_precision(op.q.reshape(-1, *op.q.shape[-2:]))
    k = _high_precision(op.k.reshape(-1, *op.k.shape[-2:]))
    decay = None if op.log_decay is None else _high_precision(op._decay().reshape(k.shape))
    dtype = (
        torch.promote_types(q.dtype, k.dtype)
        if decay is None
        else torch.promote_types(torch.promote_types(q.dtype, k.dtype), decay.dtype)
    )
    q, k = q.to(dtype), k.to(dtype)
    length = q.shape[-2]
    if decay is None and q.shape[-1] > length:
        # Without decay T = q k^T exactly as (q Qk)(Rk^T) for k^T = Qk Rk: the state dim shrinks to L
        basis, coords = torch.linalg.qr(k.transpose(-1, -2))  # (B, N, L), (B, L, L)
        q, k = q @ basis, coords.transpose(-1, -2)
    decay = torch.ones_like(k) if decay is None else decay.to(dtype)
    n = q.shape[-1]
    sv = torch.zeros(q.shape[0], len(positions), n, dtype=q.real.dtype, device=q.device)
    keep = torch.tensor([p > 0 for p in positions], device=q.device)
    idx = torch.tensor([p for p in positions if p > 0], dtype=torch.long, device=q.device)
    # the factor scans hold (batch, L, N, N): bound that memory by working through the batch in slices
    step = max(1, int(2**28 // (16 * length * n * n)))
    for lo in range(0, q.shape[0], step):
        sl = slice(lo, lo + step)
        # Block i = Q_i K_i^T with K_i[s] = k_s * decay(s+1..i-1), Q_i[t] = q_t * decay(i..t).
        past = _triangular_factor_scan(k[sl], decay[sl])  # past[j] factors K_{j+1}
        # Q side, from the end: F_i = qr([q_i ; F_{i+1}]) * decay_i = qr([q_i*a_i ; F_{i+1}*a_i])
        future = _triangular_factor_scan((q[sl] * decay[sl]).flip(-2), decay[sl].flip(-2)).flip(-3)
        if len(idx):
            cores = future[:, idx] @ past[:, idx - 1].transpose(-1, -2)
            block = sv[sl]
            block[:, keep] = torch.linalg.svdvals(cores)
            sv[sl] = block
    return sv


def _count_above_tolerance(sv: Tensor, shapes: list[tuple[int, int]], dtype: torch.dtype, atol, rtol) -> Tensor:
    """Tolerance rank as torch.linalg.matrix_rank computes it, per block of the given (rows, cols)."""
    # matrix_rank: rtol defaults to eps * max(rows, cols) when neither tolerance is given,
    # and to 0 when only atol > 0 is given; tol = max(atol, rtol * sigma_max).
    eps = torch.finfo(dtype.to_real() if dtype.is_complex else dtype).eps
    dims = torch.tensor([max(m, n) for m, n in shapes], dtype=sv.dtype, device=sv.device)
    if rtol is None:
        rtol_t = dims * eps if (atol is None or atol <= 0) else torch.zeros_like(dims)
    else:
        rtol_t = torch.full_like(dims, float(rtol))
    atol_v = 0.0 if atol is None else float(atol)
    smax = sv.amax(-1) if sv.shape[-1] else sv.new_zeros(sv.shape[:-1])
    tol = torch.clamp(rtol_t * smax, min=atol_v)
    return (sv > tol.unsqueeze(-1)).sum(-1)


def _entropy_rank(sv: Tensor) -> Tensor:
    """exp(-sum p log p), p = sigma / sum(sigma); 0 for an all-zero block. Differentiable."""
    total = sv.sum(-1, keepdim=True)
    p = sv / total.clamp_min(torch.finfo(sv.dtype).tiny)
    plogp = torch.where(p > 0, p * p.clamp_min(torch.finfo(sv.dtype).tiny).log(), torch.zeros_like(p))
    return torch.where(total.squeeze(-1) > 0, torch.exp(-plogp.sum(-1)), torch.zeros_like(total.squeeze(-1)))


def _block_singular_values(operator, positions):
    """Singular values `(B, P, W)` of every block T[i:, :i], zero-padded, with what thresholds need."""
    if isinstance(operator, Semiseparable):
        length = operator.shape[-1]
        pos = _check_positions(length, positions)
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (operator.q, operator.k, operator.log_decay)
        )
        if not needs_grad:
            return _semiseparable_singular_values(operator, pos), pos, operator.shape[:-2], operator.q.dtype
        # QR of the rank-deficient early factors has no gradient; svdvals of the dense blocks always has one
        operator = operator.dense()
    if not isinstance(operator, Tensor):
        raise ValueError(f"operator must be a torch.Tensor or a Semiseparable; got {type(operator).__name__}")
    if operator.dim() < 2 or operator.shape[-1] != operator.shape[-2]:
        raise ValueError(f"operator must be a square (..., L, L) tensor or a Semiseparable; got shape {tuple(operator.shape)}")
    if not (operator.is_floating_point() or operator.is_complex()):
        raise ValueError(f"operator must be floating point (or complex); got dtype {operator.dtype}")
    length = operator.shape[-1]
    pos = _check_positions(length, positions)
    flat = operator.reshape(-1, length, length)
    if flat.dtype in (torch.float32, torch.float16, torch.bfloat16) and not (torch.is_grad_enabled() and flat.requires_grad):
        return _gram_singular_values(flat, pos), pos, operator.shape[:-2], operator.dtype
    # One batched SVD per split (all channels at once), padded to a common width.
    width = max([min(length - i, i) for i in pos] + [0])
    sv = torch.zeros(flat.shape[0], len(pos), width, dtype=flat.real.dtype, device=flat.device)
    for j, i in enumerate(pos):
        if i > 0:
            s = torch.linalg.svdvals(flat[:, i:, :i])
            sv[:, j, : s.shape[-1]] = s
    return sv, pos, operator.shape[:-2], operator.dtype


@cache
def _solver_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="ess-eigvalsh")


def _eigvalsh(gram: Tensor) -> Tensor:
    """Batched `eigvalsh` spread over torch's threads, one independent slice of the batch per core.
    MKL threads inside one small solve, and that is slower than one thread (`nox -s perf -- -k
    eigensolver`); separate matrices on separate cores are not. Same values, bit for bit."""
    threads = torch.get_num_threads()
    workers = min(threads, gram.shape[0])
    if workers < 2:
        return torch.linalg.eigvalsh(gram)
    torch.set_num_threads(1)  # process-wide: each worker's solve runs on its own core
    try:
        return torch.cat(list(_solver_pool(workers).map(torch.linalg.eigvalsh, gram.tensor_split(workers))))
    finally:
        torch.set_num_threads(threads)


def _gram_singular_values(flat: Tensor, pos: list[int], budget_bytes: int = 2**28) -> Tensor:
    """Singular values `(C, P, W)` of every block flat[:, i:, :i] of single-precision operators, from
    the eigenvalues of the block's smaller Gram matrix in float64, the Grams of all splits built by
    rank-one updates: G_i = sum_{t >= i} M[t, :i]^T M[t, :i] (columns, i <= L - i) and
    H_i = sum_{s < i} M[i:, s] M[i:, s]^T (rows). Squaring costs float64 digits, not float32 ones:
    a singular value is resolved down to ~sqrt(n eps64) = 1e-7 of the largest at n = 128, below
    every tolerance a float32 operator supports (matrix_rank's max(m, n) eps32 = 1.5e-5 there);
    a float32 SVD carries errors of that size itself. The eigensolver costs a fraction of an SVD."""
    channels, length, _ = flat.shape
    half = length // 2
    width = max([min(length - i, i) for i in pos] + [0])
    sv = torch.zeros(channels, len(pos), width, dtype=torch.float64, device=flat.device)
    wanted = {i: j for j, i in enumerate(pos) if i > 0}
    step = max(1, budget_bytes // (8 * 3 * max(half, 1) * max(length - half, 1)))  # channels per slice
    for lo in range(0, channels, step):
        m = flat[lo : lo + step].to(torch.float64)
        block = sv[lo : lo + step]

        def put(i: int, gram: Tensor, block: Tensor = block) -> None:
            values = _eigvalsh(gram).flip(-1).clamp_min(0).sqrt()
            block[:, wanted[i], : values.shape[-1]] = values

        # columns: G_i = S_i[:i, :i] with S_i = M[i:, :half]^T M[i:, :half], from i = half down to 1;
        # each update touches only the leading block that this and every later (smaller) split reads
        gram = m[:, half:, :half].transpose(-1, -2) @ m[:, half:, :half]
        for i in range(half, 0, -1):
            if i < half:
                row = m[:, i, :i]
                gram[:, :i, :i].addcmul_(row.unsqueeze(-1), row.unsqueeze(-2))
            if i in wanted and i <= length - i:
                put(i, gram[:, :i, :i])
        # rows: H_i = P_i[i - half:, i - half:] with P_i = M[half:, :i] M[half:, :i]^T, from i = half + 1
        # up; each update touches only the trailing block that this and every later split reads
        gram = m[:, half:, :half] @ m[:, half:, :half].transpose(-1, -2)
        for i in range(half + 1, length):
            col = m[:, i:, i - 1]
            gram[:, i - half :, i - half :].addcmul_(col.unsqueeze(-1), col.unsqueeze(-2))
            if i in wanted and i > length - i:
                put(i, gram[:, i - half :, i - half :])
    return sv


def _ess_from_singular_values(sv, pos, length, batch_shape, dtype, kind, atol=None, rtol=None) -> Tensor:
    if kind == "tolerance":
        ess = _count_above_tolerance(sv, [(length - i, i) for i in pos], dtype, atol, rtol)
    else:
        ess = _entropy_rank(sv).to(dtype.to_real() if dtype.is_complex else dtype)
    ess = ess.masked_fill(torch.tensor([i == 0 for i in pos], device=ess.device), 0)
    return ess.reshape(*batch_shape, len(pos))


def effective_state_size(
    operator: Tensor | Semiseparable,
    kind: str = "tolerance",
    atol: float | None = None,
    rtol: float | None = None,
    positions: Sequence[int] | Tensor | None = None,
) -> Tensor:
    """ESS at every split of a causal operator.

    Args:
        operator: dense `(..., L, L)` tensor or a `Semiseparable`.
        kind: "tolerance" (rank above tolerance) or "entropy" (Roy–Vetterli effective rank).
        atol, rtol: as in `torch.linalg.matrix_rank` (same defaults), for kind="tolerance".
        positions: splits to evaluate (default: all L).

    Returns `(..., P)`: entry j is the ESS of `operator[..., i:, :i]` with i = positions[j]
    (P = L and i = j by default); the ESS at split 0 is 0. Tolerance ESS is an integer
    tensor, entropy ESS has the operator's floating dtype.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown ESS kind {kind!r}; choose one of {KINDS}")
    sv, pos, batch_shape, dtype = _block_singular_values(operator, positions)
    return _ess_from_singular_values(sv, pos, operator.shape[-1], batch_shape, dtype, kind, atol, rtol)


# --------------------------------------------------------------------------- aggregation


def interior_window(length: int, window: tuple[float, float] = DEFAULT_WINDOW) -> tuple[int, int]:
    """Split positions [start, stop) of the interior window used for headline means."""
    lo, hi = window
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"window must satisfy 0 <= lo < hi <= 1; got {window}")
    start, stop = int(round(lo * length)), int(round(hi * length))
    return max(start, 1), max(stop, max(start, 1) + 1)


# --------------------------------------------------------------------------- shared state (MIMO)


def _real_state_space(decay: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A complex diagonal system x_t = diag(decay) x_{t-1} + B u_t, y_t = Re(C x_t) as a real one of
    twice the state: z = [Re x; Im x], so that its factors below have 2N real columns, the real
    state's size, and T[t, s] = C_r A^(t-s) B_r."""
    decay, B, C = (t.detach().to(torch.complex128) for t in (decay, B, C))
    re, im = torch.diag(decay.real), torch.diag(decay.imag)
    A = torch.cat([torch.cat([re, -im], 1), torch.cat([im, re], 1)], 0)
    return A, torch.cat([B.real, B.imag], 0), torch.cat([C.real, -C.imag], 1)


def mimo_singular_values(decay: Tensor, B: Tensor, C: Tensor, length: int, positions: Sequence[int] | None = None) -> Tensor:
    """Singular values `(P, 2N)` (float64) of the multi-input multi-output blocks T[i:, :i] of a layer whose
    channels share one state, every input channel to every output channel, from the state-space factors
    (`Mixer.state_space`: decays `(N,)`, B `(N, d)`, C `(d, N)`, complex). Block i = Obs_i Ctrl_i with
    Obs_i rows C_r A^(t-i) (t >= i) and Ctrl_i columns A^(i-s) B_r (s < i); each factor has 2N real
    columns, so the block's rank is at most the layer's real state 2N. The R factors of both come from
    incremental QRs (as `_triangular_factor_scan`: no squared condition number) and the block's singular
    values are those of the small 2N x 2N product R_obs R_ctrl^T; the (L - i) d x i d block is never built."""
    pos = _check_positions(length, positions)
    A, Br, Cr = _real_state_space(decay, B, C)
    n = A.shape[0]
    AB = (A @ Br).T  # rows (A B_r)^T: the newest input's column of Ctrl
    ctrl = [A.new_zeros(n, n)]  # ctrl[i]: R of Ctrl_i^T, Ctrl_0 empty
    for _ in range(length):
        ctrl.append(torch.linalg.qr(torch.cat([ctrl[-1] @ A.T, AB], 0), mode="r").R[:n])
    obs = [A.new_zeros(n, n)] * (length + 1)  # obs[i]: R of Obs_i, Obs_L empty
    for i in range(length - 1, -1, -1):
        obs[i] = torch.linalg.qr(torch.cat([Cr, obs[i + 1] @ A], 0), mode="r").R[:n]
    cores = torch.stack([obs[i] @ ctrl[i].T for i in pos])
    return torch.linalg.svdvals(cores).masked_fill(torch.tensor([i == 0 for i in pos])[:, None], 0)


def mimo_ess(sv: Tensor, positions: list[int], length: int, channels: int, dtype: torch.dtype) -> tuple[Tensor, dict]:
    """The MIMO blocks' ranks `(P,)` from `mimo_singular_values`: at machine precision as matrix_rank
    counts for a block of (L - i) d x i d entries of `dtype`, and at each relative tolerance ("block":
    of the block's largest singular value; "operator": of the largest over every split)."""
    shapes = [((length - i) * channels, i * channels) for i in positions]
    machine = _count_above_tolerance(sv, shapes, dtype, None, None)
    scale = sv.amax()
    by = {}
    for rtol in RELATIVE_TOLERANCES:
        by[f"block:{rtol:g}"] = _count_above_tolerance(sv, shapes, dtype, None, rtol)
        by[f"operator:{rtol:g}"] = (sv > rtol * scale).sum(-1)
    return machine, by


@dataclass
class LayerESS:
    """ESS curves of one mixer layer: `ess` is `(batch, channels, P)` at split `positions`."""

    layer: int
    mixer: str
    positions: list[int]
    tolerance: Tensor
    entropy: Tensor
    tss: int
    seq_len: int
    by_tolerance: dict = field(default_factory=dict)  # "block:1e-3" / "operator:1e-3" -> ESS like `tolerance`
    # a mixer whose channels share one state (`shared_state`): the rank of the layer's MIMO block at
    # each split `(P,)`, at machine precision and at each relative tolerance; None where channels keep
    # separate states (their total is the per-channel sum)
    total_state: Tensor | None = None
    total_state_by_tolerance: dict = field(default_factory=dict)


def ess_bound(tss: int, length: int, window: tuple[int, int]) -> float:
    """The largest mean tolerance ESS a channel can have over the splits [start, stop): at split i the
    block T[i:, :i] has rank at most min(tss, i, L - i). Attention (TSS = L) can reach only the
    geometric bound; a state smaller than the window's splits caps it at TSS."""
    start, stop = window
    splits = range(max(start, 0), max(stop, start + 1))
    return sum(min(tss, i, length - i) for i in splits) / len(splits)


def _layer_summary(layer: LayerESS, inside: Tensor) -> dict:
    """One layer's mean, total and utilization over the splits `inside` (`summarize`'s `per_layer`)."""
    tol = layer.tolerance.double()
    ent = layer.entropy.double()
    summed = {key: v.double()[..., inside].mean(-1).mean(0).sum().item() for key, v in layer.by_tolerance.items()}
    if layer.total_state is not None:
        total = layer.total_state.double()[inside].mean().item()
        total_by = {key: v.double()[inside].mean().item() for key, v in layer.total_state_by_tolerance.items()}
    else:
        total, total_by = tol[..., inside].mean(-1).mean(0).sum().item(), summed
    return {
        "shared_state": layer.total_state is not None,
        "ess_total_state": total,
        "ess_total_state_by_tolerance": total_by,
        "layer": layer.layer,
        "mixer": layer.mixer,
        "channels": tol.shape[1],
        "tss": layer.tss,
        "ess_mean": tol[..., inside].mean().item(),
        "ess_total": tol[..., inside].mean(-1).mean(0).sum().item(),
        "entropy_ess_mean": ent[..., inside].mean().item(),
        "utilization": tol[..., inside].mean().item() / max(layer.tss, 1),
        "ess_max": int(layer.tolerance.max().item()),
    }


def summarize(layers: list[LayerESS], window: tuple[float, float] = DEFAULT_WINDOW) -> dict:
    """Headline aggregates of a model's ESS curves.

    - `ess_mean`: tolerance ESS averaged over batch, channels, layers and the interior window;
    - `ess_total`: summed over channels and layers, window mean;
    - `ess_total_state`: the layers' effective state, window mean, summed over layers: per layer the sum
      over channels where channels keep separate states, the rank of the MIMO block where they share one
      (`LayerESS.total_state`: never above the layer's real state); `ess_total_state_by_tolerance` likewise;
    - `entropy_ess_mean`: as `ess_mean` for entropy ESS;
    - `tss`: the per-channel theoretical state size (max over layers); `utilization` = ess_mean / tss;
    - `ess_bound`: the largest `ess_mean` can be, the window's mean of min(tss, i, L - i) (a block
      T[i:, :i] has rank at most min(i, L - i)), and `use_of_bound` = ess_mean / ess_bound;
    - `ess_curve`: mean tolerance ESS per position (over batch, channels, layers), boundary included,
      and `entropy_ess_curve` likewise — for plots that show the boundary effect;
    - `per_layer`: each layer's mean/total/utilization; `window`: the split range used.
    """
    if not layers:
        raise ValueError("summarize: no layers")
    length = layers[0].seq_len
    start, stop = interior_window(length, window)
    pos = torch.tensor(layers[0].positions)
    inside = (pos >= start) & (pos < stop)
    if not bool(inside.any()):
        inside = torch.ones_like(inside)
    per_layer = [_layer_summary(layer, inside) for layer in layers]
    tss = max(p["tss"] for p in per_layer)
    ess_mean = sum(p["ess_mean"] for p in per_layer) / len(per_layer)
    bound = ess_bound(tss, length, (start, stop))
    return {
        "ess_mean": ess_mean,
        "ess_total": sum(p["ess_total"] for p in per_layer),
        "ess_total_state": sum(p["ess_total_state"] for p in per_layer),
        "ess_total_state_by_tolerance": {
            key: sum(p["ess_total_state_by_tolerance"][key] for p in per_layer)
            for key in per_layer[0]["ess_total_state_by_tolerance"]
        },
        "entropy_ess_mean": sum(p["entropy_ess_mean"] for p in per_layer) / len(per_layer),
        "ess_max": max(p["ess_max"] for p in per_layer),
        "tss": tss,
        "utilization": ess_mean / max(tss, 1),
        "ess_bound": bound,
        "use_of_bound": ess_mean / max(bound, 1e-12),
        "window": [start, stop],
        "positions": layers[0].positions,
        "ess_curve": torch.stack([lay.tolerance.double().mean((0, 1)) for lay in layers]).mean(0).tolist(),
        "entropy_ess_curve": torch.stack([lay.entropy.double().mean((0, 1)) for lay in layers]).mean(0).tolist(),
        "per_layer": per_layer,
        # the same headline and curve at each tolerance that measures use (RELATIVE_TOLERANCES)
        "ess_mean_by_tolerance": {
            key: sum(lay.by_tolerance[key].double()[..., inside].mean().item() for lay in layers) / len(layers)
            for key in layers[0].by_tolerance
        },
        "ess_curve_by_tolerance": {
            key: torch.stack([lay.by_tolerance[key].double().mean((0, 1)) for lay in layers]).mean(0).tolist()
            for key in layers[0].by_tolerance
        },
    }


def _shared_channels(matrix: Tensor | Semiseparable) -> tuple[Tensor | Semiseparable, Tensor]:
    """The distinct operators among all (example, channel) pairs, as one batch `(1, U, ...)`, and for
    each pair `(B, C)` the index of its operator.

    Heads share one operator across their value channels (attention's weights, the linear-attention
    family's decays and keys), and a time-invariant mixer (the LRU) has the same operator in every
    example: singular values are computed once per distinct operator and expanded. Exact: only
    operators equal in every entry are merged."""
    parts = [matrix] if isinstance(matrix, Tensor) else [t for t in (matrix.q, matrix.k, matrix.log_decay) if t is not None]
    b, c = parts[0].shape[:2]
    flat = [t.reshape(b * c, *t.shape[2:]) for t in parts]
    rows = torch.cat([t.reshape(b * c, -1) for t in flat], dim=1)
    if rows.is_complex():
        rows = torch.view_as_real(rows).flatten(1)
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    firsts = torch.full((int(inverse.max()) + 1,), b * c, dtype=torch.long, device=inverse.device)
    firsts = firsts.scatter_reduce(0, inverse, torch.arange(b * c, device=inverse.device), "amin")
    distinct = [t[firsts].unsqueeze(0) for t in flat]
    if isinstance(matrix, Tensor):
        return distinct[0], inverse.view(b, c)
    q, k, *rest = distinct
    return Semiseparable(q, k, rest[0] if rest else None), inverse.view(b, c)


@torch.no_grad()
def model_ess(
    model: torch.nn.Module, inputs: Tensor, positions: Sequence[int] | None = None, layers: str = "mixers"
) -> list[LayerESS]:
    """ESS curves (both kinds) of every mixer layer of a built model on a batch of token ids.

    The input of each mixer is captured with a forward hook; the mixer's own
    `operator(x)` then gives the matrix whose ESS is measured. `layers` names the model's list of
    layers to measure: `mixers` (the mixer under test) or `convs` (the BaseConv layers of Zoology's backbone).
    """
    mixers = [(i, m) for i, m in enumerate(getattr(model, layers, []))]
    if not mixers:
        raise ValueError(f"model_ess: the model exposes no `{layers}` (build it with architectures.backbone.LanguageModel)")
    captured: dict[int, Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, i=i: captured.__setitem__(i, args[0].detach())) for i, m in mixers]
    was_training = model.training
    model.eval()
    try:
        model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    length = inputs.shape[-1]
    pos = _check_positions(length, positions)
    out = []
    for i, mixer in mixers:
        matrix, channel_of = _shared_channels(mixer.operator(captured[i]).matrix)
        if isinstance(matrix, Semiseparable) and 2 * matrix.state_dim >= length:
            matrix = matrix.dense()  # state wider than the blocks: the dense SVDs are the cheaper exact path
        sv, _, batch_shape, dtype = _block_singular_values(matrix, pos)
        tolerance, entropy = (
            _ess_from_singular_values(sv, pos, length, batch_shape, dtype, kind)[0, channel_of].cpu()
            for kind in ("tolerance", "entropy")
        )
        by_tolerance = {}
        operator_scale = sv.amax((-1, -2), keepdim=True)  # per example and channel, over every split
        for rtol in RELATIVE_TOLERANCES:
            block = _ess_from_singular_values(sv, pos, length, batch_shape, dtype, "tolerance", rtol=rtol)
            whole = (sv > rtol * operator_scale).sum(-1).masked_fill(torch.tensor([i == 0 for i in pos]), 0)
            by_tolerance[f"block:{rtol:g}"] = block[0, channel_of].cpu()
            by_tolerance[f"operator:{rtol:g}"] = whole.reshape(*batch_shape, len(pos))[0, channel_of].cpu()
        total_state, total_by = None, {}
        if getattr(mixer, "shared_state", False):  # one state for all channels: the layer's MIMO block
            decay, B, C = mixer.state_space()
            mimo_sv = mimo_singular_values(decay, B, C, length, pos)
            total_state, total_by = mimo_ess(mimo_sv, pos, length, B.shape[-1], dtype)
        out.append(
            LayerESS(
                total_state=total_state,
                total_state_by_tolerance=total_by,
                layer=i,
                mixer=getattr(mixer, "name", type(mixer).__name__),
                positions=pos,
                tolerance=tolerance,
                entropy=entropy.float(),
                by_tolerance=by_tolerance,
                tss=int(mixer.state_size(length)),
                seq_len=length,
            )
        )
    return out
