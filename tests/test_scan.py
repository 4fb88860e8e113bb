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
