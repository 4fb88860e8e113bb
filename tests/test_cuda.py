"""Fast paths against the reference paths, on a GPU (`nox -s cuda-kernels`); skipped without CUDA."""

import copy

import pytest
import torch

from architectures import kernels, registry
from architectures.kernels import optional_import

pytestmark = pytest.mark.cuda

# mixer -> the package its fast path needs (None: always available on CUDA)
FAST = {
    "attention": None,  # SDPA in fp32; flash-attn in bf16 (test below)
    "sliding_window": "flash_attn",
    "linear_attention": "fla",
    "gla": "fla",
    "wla": "fla",
    "based": "fla",
    "mamba": "mamba_ssm",
    "mamba2": "mamba_ssm",
    "hyena": None,
}


@pytest.mark.parametrize("name", registry.names())
def test_fast_path_matches_reference(name):
    torch.manual_seed(0)
    device = torch.device("cuda")
    fast = registry.build(name, d_model=64).to(device)
    reference = copy.deepcopy(fast)
    reference.kernel_choice = "reference"
    x = torch.randn(2, 256, 64, device=device, requires_grad=True)
    y_fast = fast(x)
    y_ref = reference(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=2e-2, atol=2e-2)
    g_fast = torch.autograd.grad(y_fast.square().mean(), x)[0]
    g_ref = torch.autograd.grad(y_ref.square().mean(), x)[0]
    torch.testing.assert_close(g_fast, g_ref, rtol=5e-2, atol=5e-3)
    package = FAST.get(name, "none")
    if package is None or (package != "none" and optional_import(package) is not None):
        assert fast.kernel != "reference", f"{name} has its fast package but ran {fast.kernel}"


@pytest.mark.parametrize("name", ["attention", "sliding_window"])
def test_flash_attention_matches_reference_in_bf16(name):
    """flash-attn takes fp16/bf16 only, so the fp32 test above runs the attentions on SDPA."""
    torch.manual_seed(0)
    fast = registry.build(name, d_model=64).cuda()
    reference = copy.deepcopy(fast)
    reference.kernel_choice = "reference"
    x = torch.randn(2, 256, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_fast = fast(x)
    expected = "flash-attn" if optional_import("flash_attn") is not None else "sdpa"
    assert fast.kernel == expected
    torch.testing.assert_close(y_fast.float(), reference(x), rtol=5e-2, atol=5e-2)


def test_bf16_training_step_is_finite():
    from architectures.backbone import LanguageModel

    device = torch.device("cuda")
    kernels._verdicts.clear()  # probe afresh, from inside autocast as in training
    for name in registry.names():
        model = LanguageModel(256, name, d_model=64).to(device)
        tokens = torch.randint(0, 256, (4, 128), device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(tokens).float().logsumexp(-1).mean()
        loss.backward()
        assert torch.isfinite(loss), name
        # the first call came from inside autocast: the fast kernels must still have been chosen
        package = FAST.get(name, "none")
        if package is None or (package != "none" and optional_import(package) is not None):
            assert all(block.mixer.kernel != "reference" for block in model.blocks), name
