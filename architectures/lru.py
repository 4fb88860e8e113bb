"""Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences").

x_t = Lambda x_{t-1} + gamma * (B u_t),  y_t = Re(C x_t) + D * u_t, with a complex diagonal
Lambda = exp(-exp(nu) + i exp(theta)) (stable exponential parameterisation), the normalisation
gamma = sqrt(1 - |Lambda|^2), and Lambda initialised uniformly on the ring
r in [r_min, r_max], phase in [0, max_phase]: the paper's long-range settings r_min 0.9,
r_max 0.999, max_phase pi/10; state_dim = d_model (scaled down from the paper's 256).

The LRU's state is shared by all d_model channels (a MIMO system). Its operator is the ESS paper's
per channel: input channel a to output channel a, T[t, s] = Re(sum_n C[a, n] Lambda_n^(t-s)
gamma_n B[n, a]) for s < t, a Toeplitz matrix running through all state_dim complex modes, so TSS
per channel is 2 * state_dim real numbers (the layer's whole real state). Reference path: the
parallel complex scan.
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
    readout = None  # MIMO: its per-channel operators do not compose into its output (see `operator`)
    linear_in_input = True  # so conformance checks each channel's operator against the forward's Jacobian
    shared_state = True  # one state_dim complex state for all channels: total ESS is the MIMO block's rank

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

    def impulse_response(self, length: int) -> Tensor:
        """h[a, k] = Re(sum_n C[a, n] gamma_n B[n, a] lambda_n^k), `(d_model, L)`: how input channel a
        reaches output channel a after k steps, through all state_dim modes (D aside)."""
        powers = torch.exp(torch.arange(length, device=self.nu_log.device)[:, None] * self._log_lambda())  # (L, N)
        gain = _complex(self.C_re, self.C_im) * (_complex(self.B_re, self.B_im) * torch.exp(self.gamma_log)[:, None]).T
        return (gain @ powers.T).real  # (d_model, L)

    def operator(self, x: Tensor) -> MixerOperator:
        """Per channel a, the single-input single-output operator T^{aa} from input channel a to output
        channel a (the ESS paper's definition): T[t, s] = h[a, t - s], a causal Toeplitz matrix (the LRU
        is time-invariant). It runs through all state_dim complex modes, so its real rank is at most
        2 * state_dim. The D skip sits on the diagonal, which no block T[i:, :i] contains. Its outputs
        come from the recurrence itself, driven by channel a alone; the full output also mixes the
        other channels' inputs (the LRU is MIMO), so there is no `readout` from these."""
        self.check_input(x)
        b, length, d = x.shape
        h = self.impulse_response(length).to(x.dtype)
        lag = torch.arange(length, device=x.device)[:, None] - torch.arange(length, device=x.device)[None, :]
        toeplitz = torch.where(lag >= 0, h[:, lag.clamp_min(0)], torch.zeros((), dtype=x.dtype, device=x.device))
        matrix = toeplitz.unsqueeze(0).expand(b, d, length, length)
        # outputs: each channel alone through the modes, by the mixer's scan (`frozen`)
        inputs = x.transpose(1, 2)
        return MixerOperator(matrix, inputs, self.frozen(x)(inputs))

    def frozen(self, x: Tensor):
        """Channel a's input in, its output through the modes out: the recurrence driven by each channel
        alone (the LRU is linear: nothing to freeze). `operator`'s outputs are this map of its inputs."""
        B = _complex(self.B_re, self.B_im) * torch.exp(self.gamma_log)[:, None]  # (N, d)
        C = _complex(self.C_re, self.C_im)

        def mix(inputs: Tensor) -> Tensor:  # (B, d, L) -> (B, d, L)
            states = self._states(inputs.unsqueeze(-1).to(B.dtype) * B.T.unsqueeze(1))
            return (states * C.unsqueeze(1)).sum(-1).real.to(inputs.dtype)

        return mix

    def state_space(self) -> tuple[Tensor, Tensor, Tensor]:
        """The layer's complex diagonal state space, every channel at once: decays lambda `(N,)`, input
        map gamma * B `(N, d)` and readout C `(d, N)`, so that T[t, s] = Re(C diag(lambda)^(t-s) gamma B)
        (D aside): what `benchmarks.ess.mimo_ess` factors the MIMO blocks with."""
        B = _complex(self.B_re, self.B_im) * torch.exp(self.gamma_log)[:, None]
        return torch.exp(self._log_lambda()), B, _complex(self.C_re, self.C_im)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.state_dim  # real rank bound of one channel's operator: the N complex modes

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self._param()
        return {"x": torch.zeros(batch_size, self.state_dim, dtype=_complex(p[:0], p[:0]).dtype, device=p.device)}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        h = torch.exp(self._log_lambda()) * state["x"] + self._drive(x_t)
        return self._read(h, x_t), {"x": h}
