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

On a CPU the training path is `selective_scan_compiled`: the same recurrence in C
(`architectures/csrc/selective_scan.c`), whose states never leave the cache and whose backward
recomputes them from checkpoints; this module's PyTorch scan stays the reference and the fallback.
"""

from __future__ import annotations

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
        pointers = [*map(cpu_kernels.pointer, (u, dt, a_t, B, C, y)), None if ckpt is None else cpu_kernels.pointer(ckpt)]
        if lib.s6_forward(*pointers, batch, length, d, n, a_t.shape[0]):
            raise MemoryError("selective scan: the CPU kernel could not allocate its state")
        ctx.save_for_backward(u, dt, a_t, B, C, ckpt)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        u, dt, a_t, B, C, ckpt = ctx.saved_tensors
        batch, length, d = u.shape
        gy = gy.contiguous()
        gu, gdt, gB, gC = torch.empty_like(u), torch.empty_like(dt), torch.empty_like(B), torch.empty_like(C)
        g_a = torch.zeros_like(a_t)
        lib = cpu_kernels.load("selective_scan")
        pointers = map(cpu_kernels.pointer, (u, dt, a_t, B, C, ckpt, gy, gu, gdt, g_a, gB, gC))
        if lib.s6_backward(*pointers, batch, length, d, B.shape[-1], a_t.shape[0]):
            raise MemoryError("selective scan: the CPU kernel could not allocate its buffers")
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
