"""The parallel scan against its definition: a loop over time, and numerical gradients."""

import pytest
import torch

from architectures.scan import linear_scan


def _loop(a, b, h0=None):
    h = torch.zeros_like(b[..., 0, :]) if h0 is None else h0
    out = []
    for t in range(b.shape[-2]):
        h = a[..., t, :] * h + b[..., t, :]
        out.append(h)
    return torch.stack(out, dim=-2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("length", [1, 2, 5, 8, 13, 64])
def test_scan_matches_the_recurrence_and_its_gradients(dtype, length):
    g = torch.Generator().manual_seed(length)
    a = (torch.rand(3, length, 4, generator=g, dtype=torch.float64) * 0.9).to(dtype)
    if dtype.is_complex:
        a = a * torch.exp(1j * torch.rand(3, length, 4, generator=g, dtype=torch.float64))
    b = torch.randn(3, length, 4, generator=g, dtype=dtype)
    h0 = torch.randn(3, 4, generator=g, dtype=dtype)
    torch.testing.assert_close(linear_scan(a, b), _loop(a, b))
    torch.testing.assert_close(linear_scan(a, b, h0), _loop(a, b, h0))
    a, b = a.requires_grad_(), b.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: linear_scan(a, b, h0), (a, b))


def test_selective_scan_matches_the_recurrence_and_its_gradients():
    from architectures.selective_scan import selective_scan

    g = torch.Generator().manual_seed(0)
    length, batch, d, n = 13, 2, 3, 4
    u, B, C = (torch.randn(length, batch, k, generator=g, dtype=torch.float64) for k in (d, n, n))
    dt = torch.rand(length, batch, d, generator=g, dtype=torch.float64) * 0.5
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) - 0.5
    h, ys = torch.zeros(batch, d, n, dtype=torch.float64), []
    for t in range(length):  # the definition, step by step
        h = torch.exp(dt[t, ..., None] * A) * h + (dt[t] * u[t])[..., None] * B[t][:, None, :]
        ys.append((h * C[t][:, None, :]).sum(-1))
    torch.testing.assert_close(selective_scan(u, dt, A, B, C), torch.stack(ys))
    args = [t.clone().requires_grad_() for t in (u, dt, A, B, C)]
    assert torch.autograd.gradcheck(selective_scan, args)


@pytest.mark.parametrize(
    ("length", "d", "n", "shared_decay"), [(37, 5, 4, False), (64, 16, 16, False), (1, 3, 2, False), (37, 6, 4, True)]
)
def test_compiled_selective_scan_matches_the_reference_in_values_and_gradients(length, d, n, shared_decay):
    """The C kernel (architectures/csrc/selective_scan.c: states never materialized, recomputed from
    checkpoints in the backward) against the PyTorch scan, which the test above holds to the
    definition, in float32: L across several checkpoint chunks, any state size, and one decay per
    channel shared by its states (Mamba-2's SSD)."""
    from architectures.selective_scan import compiled_available, selective_scan, selective_scan_compiled

    g = torch.Generator().manual_seed(length)
    batch = 3
    u, B, C = (torch.randn(batch, length, k, generator=g) for k in (d, n, n))
    dt = torch.rand(batch, length, d, generator=g) * 0.5 + 0.01
    A = -torch.rand(d, 1 if shared_decay else n, generator=g) * 3 - 0.1
    if not compiled_available(u, dt, A, B, C):
        pytest.skip("no C compiler: the compiled scan is not built")
    args = [t.clone().requires_grad_() for t in (u, dt, A, B, C)]
    y = selective_scan_compiled(*args)
    u_, dt_, A_, B_, C_ = (t.clone().requires_grad_() for t in (u, dt, A, B, C))
    ref = selective_scan(u_.transpose(0, 1), dt_.transpose(0, 1), A_.expand(d, n), B_.transpose(0, 1), C_.transpose(0, 1))
    torch.testing.assert_close(y, ref.transpose(0, 1), rtol=1e-5, atol=1e-5)
    grad = torch.randn(batch, length, d, generator=g)
    got = torch.autograd.grad(y, args, grad)
    want = torch.autograd.grad(ref.transpose(0, 1), (u_, dt_, A_, B_, C_), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_compiled_selective_scan_keeps_a_nan():
    """A diverging run must show its NaN: the kernel's inlined exp keeps NaN (no -ffast-math)."""
    from architectures.selective_scan import compiled_available, selective_scan_compiled

    u, dt, B, C = torch.randn(1, 8, 2), torch.rand(1, 8, 2), torch.randn(1, 8, 3), torch.randn(1, 8, 3)
    A = -torch.rand(2, 3)
    if not compiled_available(u, dt, A, B, C):
        pytest.skip("no C compiler: the compiled scan is not built")
    dt[0, 3, 1] = float("nan")
    y = selective_scan_compiled(u, dt, A, B, C)
    assert y[0, 3:, 1].isnan().all() and not y[0, :, 0].isnan().any()
