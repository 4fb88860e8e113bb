"""An out-of-tree mixer, written the way a user would: a multi-scale gated EMA.

Each channel keeps `num_scales` exponential moving averages of its input, with data-dependent
forgetting gates f_t in (0, 1) per scale and a readout that mixes the scales:

    h_t[n] = f_t[n] h_{t-1}[n] + (1 - f_t[n]) u_t,   y_t = sum_n c_t[n] h_t[n]

so per channel it is Semiseparable(q = c, k = 1 - f, log_decay = log f) with state size
num_scales. Bring it to a design review with

    nox -s review -- architecture=examples.gated_ema:GatedEMA
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from architectures.base import MixerOperator
from architectures.scan import linear_scan
from benchmarks.ess import Semiseparable


class GatedEMA(nn.Module):
    name = "gated_ema"

    def __init__(self, d_model: int, num_scales: int = 4):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"gated_ema: `num_scales` must be >= 1, got {num_scales}")
        self.d_model, self.num_scales = d_model, num_scales
        self.in_proj = nn.Linear(d_model, d_model)
        self.gate = nn.Linear(d_model, d_model * num_scales)
        self.mix = nn.Linear(d_model, d_model * num_scales)
        self.out_proj = nn.Linear(d_model, d_model)
        self.kernel = "reference"

    def _parts(self, x: Tensor):
        b, length, d = x.shape
        u = self.in_proj(x).transpose(1, 2)  # (B, D, L)
        log_f = F.logsigmoid(self.gate(x)).view(b, length, d, self.num_scales).transpose(1, 2)  # (B, D, L, N)
        c = self.mix(x).view(b, length, d, self.num_scales).transpose(1, 2)
        return u, log_f, c

    def forward(self, x: Tensor) -> Tensor:
        u, log_f, c = self._parts(x)
        states = linear_scan(log_f.exp(), (1 - log_f.exp()) * u.unsqueeze(-1))
        return self.readout((states * c).sum(-1), x)

    def frozen(self, x: Tensor):
        """Inputs u in, outputs out, with the gates f and readout c of `x` held: the forward's own scan,
        linear in u, so conformance can check the operator against its Jacobian."""
        _, log_f, c = self._parts(x)
        f = log_f.exp()
        return lambda u: (linear_scan(f, (1 - f) * u.unsqueeze(-1)) * c).sum(-1)

    def operator(self, x: Tensor) -> MixerOperator:
        u, log_f, c = self._parts(x)
        states = linear_scan(log_f.exp(), (1 - log_f.exp()) * u.unsqueeze(-1))
        return MixerOperator(Semiseparable(c, 1 - log_f.exp(), log_f), u, (states * c).sum(-1))

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        return self.out_proj(outputs.transpose(1, 2))

    def state_size(self, seq_len: int) -> int:
        return self.num_scales

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self.gate.weight
        return {"h": p.new_zeros(batch_size, self.d_model, self.num_scales)}

    def step(self, x_t: Tensor, state: dict[str, Tensor]):
        u, log_f, c = (t[:, :, 0] for t in self._parts(x_t.unsqueeze(1)))
        f = log_f.exp()
        h = f * state["h"] + (1 - f) * u.unsqueeze(-1)
        return self.readout((h * c).sum(-1, keepdim=True), x_t.unsqueeze(1))[:, 0], {"h": h}
