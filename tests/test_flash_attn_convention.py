"""How the attentions call flash-attn: layout, causal flag and window, on a CPU.

flash-attn has no CPU form, so it is stood in for by a function written from its documented
semantics (flash_attn_interface.flash_attn_func: `(batch, seqlen, nheads, headdim)` fp16/bf16
tensors; with `window_size=(left, right)` query i sees keys i - left ..= i + right, and
`causal=True` caps right at 0). This checks our side of the call; the kernel itself is checked
against the reference on a GPU by tests/test_cuda.py.
"""

import copy
import sys
import types

import pytest
import torch

import architectures.kernels
from architectures import registry


def documented_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1)):
    assert q.dtype in (torch.float16, torch.bfloat16), "flash-attn takes fp16/bf16 only"
    assert q.shape[1] == k.shape[1] and q.shape[2] == k.shape[2]  # (batch, seqlen, nheads, headdim)
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * scale
    row = torch.arange(q.shape[1])[:, None]
    col = torch.arange(k.shape[1])[None, :]
    left, right = window_size
    right = 0 if causal else right
    hidden = torch.zeros(row.shape[0], col.shape[1], dtype=torch.bool)
    if right >= 0:
        hidden |= col > row + right
    if left >= 0:
        hidden |= col < row - left
    weights = scores.masked_fill(hidden, float("-inf")).softmax(-1)
    return torch.einsum("bhts,bshd->bthd", weights, v.float()).to(q.dtype)


@pytest.fixture
def flash_on_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_func=documented_flash_attn_func))
    monkeypatch.setattr(architectures.kernels, "FAST_DEVICE_TYPES", frozenset({"cuda", "cpu"}))
    monkeypatch.setattr(architectures.kernels, "_verdicts", {})


@pytest.mark.parametrize(("name", "config"), [("attention", {}), ("sliding_window", {"window_size": 5})])
def test_flash_call_matches_reference(flash_on_cpu, name, config):
    torch.manual_seed(0)
    mixer = registry.build(name, d_model=32, num_heads=2, **config)
    reference = copy.deepcopy(mixer)
    reference.kernel_choice = "reference"
    x = torch.randn(2, 40, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mixer(x)
    assert mixer.kernel == "flash-attn"
    torch.testing.assert_close(y.float(), reference(x), rtol=3e-2, atol=3e-2)


def test_fp32_inputs_take_sdpa(flash_on_cpu):
    mixer = registry.build("sliding_window", d_model=32)
    reference = copy.deepcopy(mixer)
    reference.kernel_choice = "reference"
    x = torch.randn(2, 40, 32)
    torch.testing.assert_close(mixer(x), reference(x), rtol=1e-5, atol=1e-5)
    assert mixer.kernel == "sdpa"
