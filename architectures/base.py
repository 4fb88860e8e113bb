"""The interface every token mixer implements.

A mixer maps `(batch, length, d_model) -> (batch, length, d_model)` and is, for a
fixed input, a causal linear operator on its per-channel inputs. Besides
`forward` it exposes:

- `operator(x) -> MixerOperator(matrix, inputs, outputs)`: the causal operator
  T(x) per channel (dense `(B, C, L, L)` or a `Semiseparable`), the channel
  inputs `(B, C, L)` it acts on and the channel outputs `(B, C, L)` the mixer
  computed with its own (fast) path, so that `outputs == matrix @ inputs`;
- `readout(outputs, x)`: the rest of the forward pass after the operator
  (gates, skip terms, output projection), so that
  `readout(matrix @ inputs, x) == forward(x)` ties the operator to the output;
- `state_size(seq_len)`: the theoretical state size (TSS) of one channel;
- `init_state(batch_size)` / `step(x_t, state) -> (y_t, state)`: recurrent
  decoding whose `state` tensors are the real inference cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from architectures import cpu_kernels
from architectures.kernels import check_choice
from architectures.operators import MixerOperator  # noqa: F401  (part of the mixer interface)


def config_error(mixer: str, field: str, problem: str) -> ValueError:
    """A configuration error that names the mixer, the field and the fix."""
    return ValueError(f"{mixer}: invalid `{field}`: {problem}")


def require_positive(mixer: str, **fields: int) -> None:
    for name, value in fields.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise config_error(mixer, name, f"must be a positive integer, got {value!r}")


def require_divisible(mixer: str, field: str, value: int, by_field: str, by: int) -> None:
    if value % by:
        raise config_error(mixer, field, f"{field}={value} is not divisible by {by_field}={by}")


class Mixer(nn.Module):
    """Base class of the reference mixers: shared checks and helpers, no behaviour of its own."""

    name: str = "mixer"
    # constructor argument that must be the sequence length (e.g. Hyena's filter length), if any;
    # the harness, throughput and conformance fill it in when the config leaves it unset
    length_param: str | None = None
    # whether the mixer carries its own short causal convolution (Mamba, Mamba-2, Hyena): Zoology's
    # backbone puts a BaseConv layer ahead of a mixer that does not (architectures.backbone). A
    # user's mixer (a subclass or not) declares it the same way; undeclared means False.
    short_conv: bool = False
    # whether it is a gated convolution (Hyena, H3, BaseConv: a long filter that is the same for every
    # input, between elementwise gates): Zoology's class of mixers whose width must grow with the
    # sequence length to solve MQAR; the page's never-learned line cites it. Undeclared means False.
    gated_convolution: bool = False
    # the block Zoology trains the mixer in: "transformer" (x + mixer(norm x), then x + norm x: its
    # TransformerBlock with the Identity state mixer) or "mamba" (x + mixer(norm x) only: MambaBlock)
    zoology_block: str = "transformer"
    # whether Zoology wraps it as Hybrid([BaseConv, mixer]) although it carries a short convolution of
    # its own (models_repo.py: DeltaNet and Gated DeltaNet keep fla's short conv and get a BaseConv layer)
    zoology_hybrid: bool = False
    # whether all channels read and write one state (the LRU: a MIMO system): then the layer's total
    # ESS is the rank of its multi-input multi-output block, not the sum of per-channel ranks, and the
    # mixer provides `state_space()` (decays, B, C) for it (benchmarks.ess.mimo_ess). Undeclared: False.
    shared_state: bool = False

    def __init__(self, d_model: int, kernel: str = "auto"):
        super().__init__()
        require_positive(self.name, d_model=d_model)
        check_choice(self.name, kernel)
        self.d_model = d_model
        self.kernel_choice = kernel  # "auto" | "fast" | "reference", from the config
        self.kernel = "reference"  # which implementation the last forward used

    def operator(self, x: Tensor) -> MixerOperator:
        raise NotImplementedError

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def frozen(self, x: Tensor) -> Callable[[Tensor], Tensor] | None:
        """The map from `operator(x).inputs` to `.outputs` with every input-dependent part (attention
        weights, gates, decays, step sizes) held at its value for `x`, computed by the mixer's own
        forward path, not from the materialized operator. It is linear, so conformance checks that its
        Jacobian equals the operator, channel by channel. None where a mixer does not define one."""
        return None

    def state_size(self, seq_len: int) -> int:
        raise NotImplementedError

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def _param(self) -> Tensor:
        return next(self.parameters())

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"{self.name}: expected input (batch, length, {self.d_model}); got {tuple(x.shape)}")


class _CausalDepthwiseConv(torch.autograd.Function):
    """y = conv1d(left-pad(x, K - 1), w, b), depthwise, with a backward of convolutions: oneDNN's
    depthwise conv backward on CPU costs ~7x its forward at the training shapes; here the input's
    gradient is a depthwise conv of the output's gradient with the flipped taps, and the taps'
    gradient one conv with (batch x channels) groups: each channel's input against its gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        padded = F.pad(x, (weight.shape[-1] - 1, 0))
        ctx.save_for_backward(padded, weight)
        ctx.has_bias = bias is not None
        return F.conv1d(padded, weight, bias, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor):
        padded, weight = ctx.saved_tensors
        grad = grad.contiguous()
        batch, channels, length = grad.shape
        taps = weight.shape[-1]
        grad_x = F.conv1d(F.pad(grad, (0, taps - 1)), weight.flip(-1), groups=channels)
        groups = batch * channels
        per_example = F.conv1d(padded.reshape(1, groups, -1), grad.view(groups, 1, length), groups=groups)
        grad_w = per_example.view(batch, channels, 1, taps).sum(0)
        return grad_x, grad_w, grad.sum((0, 2)) if ctx.has_bias else None


class _CompiledCausalConv(torch.autograd.Function):
    """The same convolution by the C loops of `architectures/csrc/causal_conv.c` (fp32, CPU), in the
    layout the input comes in: (B, C, L) with time contiguous, or channels-last (B, L, C) memory
    (a transposed projection), so that neither is copied into the other. The output and the input's
    gradient keep the input's layout."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        channels_last = x.stride(1) == 1 and x.shape[2] > 1
        if channels_last:
            x = x.transpose(1, 2).contiguous().transpose(1, 2)  # a no-op for a transposed contiguous tensor
        else:
            x = x.contiguous()
        taps = weight.reshape(weight.shape[0], -1)
        taps = (taps.t() if channels_last else taps).contiguous()
        y = torch.empty_like(x)  # the same strides as x
        lib = cpu_kernels.load("causal_conv")
        forward = lib.conv_forward_cl if channels_last else lib.conv_forward
        forward(*map(cpu_kernels.pointer, (x, taps, bias, y)), *x.shape, weight.shape[-1])
        ctx.save_for_backward(x, taps)
        ctx.has_bias, ctx.weight_shape, ctx.channels_last = bias is not None, weight.shape, channels_last
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, taps = ctx.saved_tensors
        grad = grad.transpose(1, 2).contiguous().transpose(1, 2) if ctx.channels_last else grad.contiguous()
        grad_x, grad_w = torch.empty_like(x), torch.zeros_like(taps)
        grad_b = x.new_zeros(x.shape[1]) if ctx.has_bias else None
        lib = cpu_kernels.load("causal_conv")
        backward = lib.conv_backward_cl if ctx.channels_last else lib.conv_backward
        backward(*map(cpu_kernels.pointer, (x, taps, grad, grad_x, grad_w, grad_b)), *x.shape, ctx.weight_shape[-1])
        grad_w = grad_w.t() if ctx.channels_last else grad_w
        return grad_x, grad_w.reshape(ctx.weight_shape), grad_b


def depthwise_causal_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y[b, c, t] = bias[c] + sum_k weight[c, 0, k] x[b, c, t - (K - 1 - k)] for x `(B, C, L)`, weight
    `(C, 1, K)`. On CPU (outside autocast): in fp32 the C loops of `_CompiledCausalConv` where they
    built, else `_CausalDepthwiseConv`, whose backward is several times faster than conv1d's there
    (`tests/test_mixers.py` checks both against nn.Conv1d)."""
    if x.device.type == "cpu" and not torch.is_autocast_enabled("cpu") and x.dtype == weight.dtype:
        if x.dtype == torch.float32 and cpu_kernels.load("causal_conv") is not None:
            return _CompiledCausalConv.apply(x, weight, bias)
        return _CausalDepthwiseConv.apply(x, weight, bias)
    return F.conv1d(F.pad(x, (weight.shape[-1] - 1, 0)), weight, bias, groups=x.shape[1])


def causal_conv(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """The causal outputs `(B, C, L)` of a depthwise `conv` (built with padding K - 1) on `x` `(B, C, L)`:
    the module's first L outputs (`depthwise_causal_conv` with its weights)."""
    return depthwise_causal_conv(x, conv.weight, conv.bias)


def conv_step(conv: nn.Conv1d, past: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor]:
    """One token of a depthwise causal conv (with or without bias): its output `(B, C)` and the new
    `past` `(B, C, K - 1)`."""
    window = torch.cat([past, x_t.unsqueeze(-1)], dim=-1)  # (B, C, K)
    y = (window * conv.weight.squeeze(1)).sum(-1)
    return (y if conv.bias is None else y + conv.bias), window[..., 1:]


def init_step_sizes(mixer: str, n: int, dt_min: float, dt_max: float) -> Tensor:
    """Bias whose softplus is a step size drawn log-uniformly in [dt_min, dt_max] (Mamba's dt init)."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"{mixer}: invalid `dt_min`/`dt_max`: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return dt + torch.log(-torch.expm1(-dt))  # inverse softplus


def with_length(factory, config: dict, seq_len: int) -> dict:
    """`config` plus the sequence length for a mixer that declares `length_param` and was not given it."""
    param = getattr(factory, "length_param", None)
    if param and config.get(param) is None:
        return {**config, param: seq_len}
    return config


def tensor_bytes(*tensors: Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def cache_bytes(state: dict[str, Tensor]) -> int:
    """Bytes held by the tensors of a decoding state (the real inference cache)."""
    return tensor_bytes(*(t for t in state.values() if isinstance(t, Tensor)))


@torch.no_grad()
def decode(mixer: nn.Module, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Run `step` over every position of x `(B, L, D)`; returns outputs `(B, L, D)` and the final state."""
    state = mixer.init_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = mixer.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state
