"""Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences").

x_t = Lambda x_{t-1} + gamma * (B u_t),  y_t = Re(C x_t) + D * u_t, with a complex diagonal
Lambda = exp(-exp(nu) + i exp(theta)) (stable exponential parameterisation), the normalisation
gamma = sqrt(1 - |Lambda|^2), and Lambda initialised uniformly on the ring
r in [r_min, r_max], phase in [0, max_phase]: the paper's long-range settings r_min 0.9,
r_max 0.999, max_phase pi/10; state_dim = d_model (scaled down from the paper's 256).

The LRU's state is shared by all d_model channels (a MIMO system) and its single-input
single-output pieces are its complex modes: the operator's channels are the state_dim modes,
channel n maps its input gamma_n (B u)_n to its state x_n by Lambda_n^(t-s) (a complex
Semiseparable of state size 1). TSS per channel is therefore 1 complex state (2 real numbers);
the layer's real state is 2 * state_dim. Reference path: the parallel complex scan.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from architectures.base import Mixer, MixerOperator, config_error, require_positive
from architectures.scan import linear_scan


def _complex(re: Tensor, im: Tensor) -> Tensor:
    """A complex tensor in fp32 at least: torch has no bf16 complex dtype, so a bf16 model keeps
    its complex recurrence in complex64 and returns to bf16 at the readout."""
    dtype = torch.promote_types(re.dtype, torch.float32)
    return torch.complex(re.to(dtype), im.to(dtype))


class LRU(Mixer):
    name = "lru"

    def __init__(
        self,
        d_model: int,
        state_dim: int | None = None,  # d_model (Orvieto et al. 2023 use 256 at larger widths)
        r_min: float = 0.9,  # the paper's long-range ring init
        r_max: float = 0.999,
        max_phase: float = math.pi / 10,  # the paper's LRA setting
        kernel: str = "auto",
    ):
        super().__init__(d_model, kernel)
        state_dim = d_model if state_dim is None else state_dim
        require_positive(self.name, state_dim=state_dim)
        if not 0 <= r_min < r_max <= 1:
            raise config_error(self.name, "r_min", f"need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
        self.state_dim = state_dim
        u1, u2 = torch.rand(state_dim), torch.rand(state_dim)
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2 + 1e-8))
        magnitude = torch.exp(-torch.exp(self.nu_log.detach()))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - magnitude**2)))
        self.B_re = nn.Parameter(torch.randn(state_dim, d_model) / math.sqrt(2 * d_model))
        self.B_im = nn.Parameter(torch.randn(state_dim, d_model) / math.sqrt(2 * d_model))
        self.C_re = nn.Parameter(torch.randn(d_model, state_dim) / math.sqrt(state_dim))
        self.C_im = nn.Parameter(torch.randn(d_model, state_dim) / math.sqrt(state_dim))
        self.D = nn.Parameter(torch.randn(d_model))
        for p in (self.nu_log, self.theta_log, self.gamma_log):
            p._no_weight_decay = True

    def _log_lambda(self) -> Tensor:
        return _complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))  # Re <= 0

    def _drive(self, x: Tensor) -> Tensor:
        """gamma * (B u): the input of every mode, `(B, L, state_dim)` complex."""
        B = _complex(self.B_re, self.B_im)
        return (x.to(B.dtype) @ B.transpose(0, 1)) * torch.exp(self.gamma_log)

    def _states(self, drive: Tensor) -> Tensor:
        self.kernel = "reference"
        decay = torch.exp(self._log_lambda()).expand_as(drive)
        return linear_scan(decay, drive)

    def _read(self, states: Tensor, x: Tensor) -> Tensor:
        C = _complex(self.C_re, self.C_im)
        return ((states @ C.transpose(0, 1)).real + self.D * x).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self._read(self._states(self._drive(x)), x)

    def operator(self, x: Tensor) -> MixerOperator:
        from benchmarks.ess import Semiseparable

        self.check_input(x)
        drive = self._drive(x)  # (B, L, N)
        b, length, n = drive.shape
        ones = torch.ones(b, n, length, 1, dtype=drive.dtype, device=x.device)
        log_decay = self._log_lambda().view(1, n, 1, 1).expand(b, n, length, 1)
        matrix = Semiseparable(ones, ones, log_decay)
        return MixerOperator(matrix, drive.transpose(1, 2), self._states(drive).transpose(1, 2))

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        return self._read(outputs.transpose(1, 2), x)

    def state_size(self, seq_len: int) -> int:
        return 1

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self._param()
        return {"x": torch.zeros(batch_size, self.state_dim, dtype=_complex(p[:0], p[:0]).dtype, device=p.device)}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        h = torch.exp(self._log_lambda()) * state["x"] + self._drive(x_t)
        return self._read(h, x_t), {"x": h}
