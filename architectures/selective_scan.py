"""Mamba's selective scan (S6) in plain PyTorch, one time step after another, with a hand-written
backward.

    h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t,   y_t = C_t . h_t        (per channel d, state n)

All tensors are time-major (sequence axis first), so a step touches one contiguous (batch, D, N)
slice, small enough to stay in cache. Each step builds its decay and input in that slice instead
of materializing (L, batch, D, N) tensors of them (on a CPU the scan is bound by memory traffic;
the parallel form and autograd made ~30 passes over such tensors). Forward keeps only the states;
the backward runs the adjoint lambda_t = C_t gy_t + exp(dt_{t+1} A) lambda_{t+1} from the end,
accumulating the gradients of dt and A step by step, and reduces the rest with batched matrix
products. This is how mamba-ssm's kernel is organised (recompute in fast memory), in PyTorch ops;
it matches the definition (tests/test_scan.py) and mamba-ssm's `selective_scan_ref`
(tests/test_fast_paths_interpreted.py).

On a CPU the same recurrence runs in C (`architectures/csrc/selective_scan.c`), whose states never
leave the cache and whose backward recomputes them from checkpoints: `selective_scan_compiled`, and
for training `scan_block_compiled`, Mamba's and Mamba-2's whole block around it; this module's PyTorch
scan stays the reference and the fallback.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from architectures import cpu_kernels


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
        # u, dt: (L, b, D); A: (D, N); B, C: (L, b, N)
        length, batch, d = u.shape
        n = A.shape[-1]
        dtu = dt * u
        # every step's drive dt_t u_t B_t at once (one batched outer product), then the decays in place
        states = dtu.unsqueeze(-1) * B.unsqueeze(-2)
        for t in range(1, length):
            states[t].addcmul_(torch.exp(dt[t].unsqueeze(-1) * A), states[t - 1])
        y = torch.bmm(states.view(-1, d, n), C.reshape(-1, n, 1)).view(length, batch, d)
        ctx.save_for_backward(u, dt, A, B, C, states)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        u, dt, A, B, C, states = ctx.saved_tensors
        length, batch, d = u.shape
        n = A.shape[-1]
        gy = gy.contiguous()
        flat = (-1, d, n)
        g_c = torch.bmm(gy.view(-1, 1, d), states.view(flat)).view(length, batch, n)
        # lambda_t = dL/d(drive_t), starting from its direct terms gy_t C_t (one batched outer product)
        lam = gy.unsqueeze(-1) * C.unsqueeze(-2)
        g_dt = torch.zeros_like(dt)
        g_a_acc = torch.zeros_like(states[0])  # sum over t of g_log_t * dt_t, reduced over the batch at the end
        decay_next = None
        for t in range(length - 1, -1, -1):
            if decay_next is not None:
                lam[t].addcmul_(decay_next, lam[t + 1])
            decay = torch.exp(dt[t].unsqueeze(-1) * A)
            if t > 0:  # d/d(dt_t A) through decay_t = lambda_t h_{t-1} decay_t (h_{-1} = 0)
                g_log = lam[t] * states[t - 1]
                g_log.mul_(decay)
                torch.sum(g_log * A, -1, out=g_dt[t])
                g_a_acc.addcmul_(g_log, dt[t].unsqueeze(-1))
            decay_next = decay
        g_a = g_a_acc.sum(0)
        g_dtu = torch.bmm(lam.view(flat), B.reshape(-1, n, 1)).view(length, batch, d)
        g_b = torch.bmm((dt * u).view(-1, 1, d), lam.view(flat)).view(length, batch, n)
        return g_dtu * dt, g_dt + g_dtu * u, g_a, g_b, g_c


def selective_scan(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """y `(L, b, D)` of the selective scan for time-major u, dt `(L, b, D)`, B, C `(L, b, N)`, A `(D, N)`."""
    dtype = torch.promote_types(u.dtype, A.dtype)  # fp32 at least, as the kernel computes
    return _SelectiveScan.apply(*(t.to(dtype).contiguous() for t in (u, dt, A, B, C)))


class _CompiledSelectiveScan(torch.autograd.Function):
    """The same scan by the C kernel of `architectures/csrc/selective_scan.c` (batch-major, fp32)."""

    @staticmethod
    def forward(ctx, u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
        # u, dt: (b, L, D); A: (D, N), or (D, 1) for one decay per channel; B, C: (b, L, N); all
        # contiguous fp32 on the CPU
        batch, length, d = u.shape
        n = B.shape[-1]
        lib = cpu_kernels.load("selective_scan")
        a_t = A.t().contiguous()  # (N or 1, D): the kernel's inner loop runs over channels
        y = torch.empty_like(u)
        ckpt = u.new_empty(batch, lib.s6_chunks(length), n, d) if any(ctx.needs_input_grad) else None
        tensors = (u, dt, a_t, B, C, y, ckpt)
        cpu_kernels.call("selective_scan", "s6_forward", *tensors, batch, length, d, n, a_t.shape[0], who="selective scan")
        ctx.save_for_backward(u, dt, a_t, B, C, ckpt)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        u, dt, a_t, B, C, ckpt = ctx.saved_tensors
        batch, length, d = u.shape
        gy = gy.contiguous()
        gu, gdt, gB, gC = torch.empty_like(u), torch.empty_like(dt), torch.empty_like(B), torch.empty_like(C)
        g_a = torch.zeros_like(a_t)
        tensors = (u, dt, a_t, B, C, ckpt, gy, gu, gdt, g_a, gB, gC)
        cpu_kernels.call(
            "selective_scan", "s6_backward", *tensors, batch, length, d, B.shape[-1], a_t.shape[0], who="selective scan"
        )
        return gu, gdt, g_a.t(), gB, gC


def compiled_available(*tensors: Tensor) -> bool:
    """Whether the C kernel can run the scan of these tensors: fp32 on the CPU and the kernel built."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and (
        cpu_kernels.load("selective_scan") is not None
    )


def selective_scan_compiled(u: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """y `(b, L, D)` of the selective scan for batch-major u, dt `(b, L, D)`, B, C `(b, L, N)`, A `(D, N)`
    or `(D, 1)` (one decay per channel, shared by its states: Mamba-2), by the C kernel (check
    `compiled_available` first). Equal to `selective_scan` (tests/test_scan.py)."""
    return _CompiledSelectiveScan.apply(*(t.contiguous() for t in (u, dt, A, B, C)))


class _CompiledScanBlock(torch.autograd.Function):
    """Mamba's or Mamba-2's block from its in-projection's output `proj` (b, L, width) to the gated scan
    output `(y + D u) * silu(z)` (b, L, D), by the C kernels: short conv + SiLU, step sizes (softplus of
    the dt projection), scan, skip and gate in two calls each way, every operand a slice of `proj`, of the
    conv's output or of Mamba's x-projection, read in place; the backward writes `proj`'s gradient whole."""

    @staticmethod
    def forward(ctx, proj, conv_w, conv_b, x_proj_w, dt_w, dt_b, A, Dskip, norm_w, eps, layout):
        z_at, conv_at, dtl_at = layout  # columns of proj: z, the conv's input, Mamba-2's dt logits
        batch, length, width = proj.shape
        d = Dskip.shape[0]
        lib = cpu_kernels.load("selective_scan")
        p = cpu_kernels.pointer
        cw = conv_w.reshape(conv_w.shape[0], -1).t().contiguous()  # (K, channels)
        taps, channels = cw.shape
        grad = any(ctx.needs_input_grad)
        xc, pre = proj.new_empty(batch, length, channels), proj.new_empty(batch, length, channels) if grad else None
        lib.conv_silu_forward(p(proj[..., conv_at:]), width, p(cw), p(conv_b), p(xc), p(pre), batch, length, channels, taps)
        a_t = A.t().contiguous()  # (N or 1, D)
        if x_proj_w is not None:  # Mamba: dt's low-rank input, B and C from the x-projection of u
            rank = dt_w.shape[1]
            n = (x_proj_w.shape[0] - rank) // 2
            xdbl = torch.mm(xc.view(-1, d), x_proj_w.t())
            w_t = dt_w.t().contiguous()  # (R, D)
            src, s_src, b_at, dtl, s_dtl = xdbl, xdbl.shape[1], rank, xdbl, xdbl.shape[1]
        else:  # Mamba-2: x, B, C from the conv's output, a dt logit per head from proj
            rank, n = dt_b.shape[0], (channels - d) // 2
            xdbl = w_t = None
            src, s_src, b_at, dtl, s_dtl = xc.view(-1, channels), channels, d, proj[..., dtl_at:], width
        out = proj.new_empty(batch, length, d)
        dt, sig, yd = (proj.new_empty(batch, length, d) for _ in range(3)) if grad else (None,) * 3
        ckpt = proj.new_empty(batch, lib.s6_chunks(length), n, d) if grad else None
        rstd = proj.new_empty(batch, length) if grad and norm_w is not None else None
        args = [p(xc), xc.shape[-1], p(dtl), s_dtl, p(w_t), p(dt_b), rank, p(a_t), a_t.shape[0], p(src[:, b_at:])]
        args += [p(src[:, b_at + n :]), s_src, p(proj[..., z_at:]), width, p(Dskip), p(norm_w), ctypes.c_float(eps)]
        args += [p(out), p(dt), p(sig), p(yd), p(ckpt), p(rstd)]
        cpu_kernels.call("selective_scan", "s6_block_forward", *args, batch, length, d, n, who="selective scan")
        ctx.save_for_backward(proj, cw, pre, x_proj_w, xc, xdbl, w_t, a_t, Dskip, norm_w, rstd, dt, sig, yd, ckpt)
        ctx.layout, ctx.conv_shape, ctx.rank, ctx.n = layout, conv_w.shape, rank, n
        return out

    @staticmethod
    def backward(ctx, gout):
        proj, cw, pre, x_proj_w, xc, xdbl, w_t, a_t, Dskip, norm_w, rstd, dt, sig, yd, ckpt = ctx.saved_tensors
        z_at, conv_at, dtl_at = ctx.layout
        batch, length, width = proj.shape
        taps, channels = cw.shape
        d, rank, n = Dskip.shape[0], ctx.rank, ctx.n
        p = cpu_kernels.pointer
        gout = gout.contiguous()
        g_proj, g_xc = torch.empty_like(proj), torch.empty_like(xc)
        g_cw, g_cb = torch.zeros_like(cw), cw.new_zeros(channels)
        g_a, g_d, g_dtb = torch.zeros_like(a_t), torch.zeros_like(Dskip), proj.new_zeros(rank if w_t is None else d)
        g_norm = None if norm_w is None else torch.zeros_like(norm_w)
        if w_t is not None:
            g_xdbl, g_w = torch.empty_like(xdbl), torch.zeros_like(w_t)
            src, g_src, s_src, b_at = xdbl, g_xdbl, xdbl.shape[1], rank
            dtl, g_dtl, s_dtl, g_s_dtl = xdbl, g_xdbl, s_src, s_src
        else:
            g_w = None
            src, g_src, s_src, b_at = xc.view(-1, channels), g_xc.view(-1, channels), channels, d
            dtl, g_dtl, s_dtl, g_s_dtl = proj[..., dtl_at:], g_proj[..., dtl_at:], width, width
        args = [p(xc), channels, p(dtl), s_dtl, p(w_t), rank, p(a_t), a_t.shape[0], p(src[:, b_at:]), p(src[:, b_at + n :])]
        args += [s_src, p(proj[..., z_at:]), width, p(Dskip), p(norm_w), p(rstd), p(dt), p(sig), p(yd), p(ckpt), p(gout)]
        args += [p(g_xc), channels]
        args += [p(g_dtl), g_s_dtl, p(g_w), p(g_dtb), p(g_a), p(g_src[:, b_at:]), p(g_src[:, b_at + n :]), s_src]
        args += [p(g_proj[..., z_at:]), width, p(g_d), p(g_norm), batch, length, d, n]
        cpu_kernels.call("selective_scan", "s6_block_backward", *args, who="selective scan")
        g_xproj = None
        if w_t is not None:  # the x-projection's share of u's gradient, and its weight's gradient
            g_xc.view(-1, d).addmm_(g_xdbl, x_proj_w)
            g_xproj = torch.mm(g_xdbl.t(), xc.view(-1, d))
        args = [proj[..., conv_at:], width, cw, pre, g_xc, g_proj[..., conv_at:], width, g_cw, g_cb]
        cpu_kernels.call("selective_scan", "conv_silu_backward", *args, batch, length, channels, taps, who="selective scan")
        g_w = None if g_w is None else g_w.t()
        return g_proj, g_cw.t().reshape(ctx.conv_shape), g_cb, g_xproj, g_w, g_dtb, g_a.t(), g_d, g_norm, None, None


def block_available(x: Tensor, *params: Tensor) -> bool:
    """Whether `scan_block_compiled` can run a block on input x: fp32 on the CPU outside autocast, and the kernel built."""
    return not torch.is_autocast_enabled("cpu") and compiled_available(x, *params)


def scan_block_compiled(proj, conv, x_proj_w, dt_w, dt_b, A, Dskip, layout, norm: torch.nn.RMSNorm | None = None) -> Tensor:
    """`(y + Dskip u) * silu(z)` `(b, L, D)` of Mamba's block (x_proj_w, dt_w: the x- and dt-projections'
    weights) or Mamba-2's (both None: B, C from the conv's output, one dt logit per head in proj) from the
    in-projection's output `proj` (b, L, width), whose columns `layout` = (z, conv input, Mamba-2's dt
    logits) start at; dt = softplus(dt projection + dt_b); `norm`: Mamba-2's RMSNorm of the result, fused too.
    Equal to the PyTorch path (tests/test_mixers.py)."""
    norm_w, eps = (None, 0.0) if norm is None else (norm.weight, norm.eps)
    args = (proj.contiguous(), conv.weight, conv.bias, x_proj_w, dt_w, dt_b, A, Dskip, norm_w, eps, layout)
    return _CompiledScanBlock.apply(*args)
