"""Zoology's BaseConv layer (Arora et al. 2023, "Zoology", `zoology/mixers/base_conv.py`).

y = ShortConv_k(u) * Linear(u) + u: a depthwise causal convolution of k taps (with bias,
`zoology/mixers/convolution.py: ShortConvolution`), gated elementwise by a linear projection of
the same input, plus the input. Zoology puts one ahead of every attention-family mixer
(`Hybrid([BaseConv(kernel_size=3), mixer])`, `zoology/experiments/models_repo.py`): it hands each
position its predecessors, which associative recall needs (the induction-head pattern).

Per channel, with the projection p = Linear(u) held at its value, the layer is the operator
T = diag(p) C + I on u (C the Toeplitz matrix of the taps) plus the affine term bias * p, which
`readout` adds. T[i:, :i] has rank <= k - 1 (only the last k - 1 inputs reach past the split), so
TSS per channel is k - 1, and the decoding cache holds those k - 1 past inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from architectures.base import Mixer, MixerOperator, causal_conv, conv_step, require_positive


class BaseConv(Mixer):
    name = "base_conv"
    short_conv = True  # it is the short convolution
    gated_convolution = True  # Zoology's prototype: conv(u) * Linear(u) + u

    def __init__(self, d_model: int, kernel_size: int = 3, kernel: str = "auto"):
        super().__init__(d_model, kernel)
        require_positive(self.name, kernel_size=kernel_size)
        self.kernel_size = kernel_size
        self.projection = nn.Linear(d_model, d_model)
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model, padding=kernel_size - 1)

    def _gate(self, x: Tensor) -> Tensor:
        return self.projection(x).transpose(1, 2)  # (B, D, L)

    def _linear(self, u: Tensor, gate: Tensor) -> Tensor:
        """T u = (taps * u) * gate + u, the conv without its bias: the part linear in u."""
        return (causal_conv(self.conv, u) - self.conv.bias[:, None]) * gate + u

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        u = x.transpose(1, 2)
        return (causal_conv(self.conv, u) * self._gate(x) + u).transpose(1, 2)

    def frozen(self, x: Tensor):
        gate = self._gate(x)
        return lambda inputs: self._linear(inputs, gate)

    def operator(self, x: Tensor) -> MixerOperator:
        self.check_input(x)
        u, gate = x.transpose(1, 2), self._gate(x)
        length = x.shape[1]
        t = torch.arange(length, device=x.device)
        lag = t[:, None] - t[None, :]
        taps = self.conv.weight[:, 0].flip(-1)  # taps[:, j]: weight on the input j steps back
        inside = (lag >= 0) & (lag < self.kernel_size)
        toeplitz = taps[:, lag.clamp(0, self.kernel_size - 1)] * inside  # (D, L, L)
        matrix = gate.unsqueeze(-1) * toeplitz.unsqueeze(0) + torch.eye(length, dtype=x.dtype, device=x.device)
        return MixerOperator(matrix, u, self._linear(u, gate))

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        return (outputs + self.conv.bias[:, None] * self._gate(x)).transpose(1, 2)

    def state_size(self, seq_len: int) -> int:
        return min(self.kernel_size - 1, seq_len)

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        return {"past": self._param().new_zeros(batch_size, self.d_model, self.kernel_size - 1)}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        conv_out, past = conv_step(self.conv, state["past"], x_t)
        return conv_out * self.projection(x_t) + x_t, {"past": past}
