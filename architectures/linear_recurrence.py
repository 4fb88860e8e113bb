"""Gated linear attention in chunked parallel form, and the mixer base shared by its family.

One recurrence covers linear attention, gated linear attention (GLA), RetNet-style
decays (WLA), Based and Mamba-2's SSD:

    S_t = diag(a_t) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t,   a_t = exp(log_a_t) in (0, 1]

with q_t, k_t in R^K (K = the state size per value channel) and a decay per key
dimension (GLA), per head (RetNet, Mamba-2) or none (linear attention, Based).
Per value channel this is the operator Semiseparable(q, k, log_a).

Reference path (`chunked_gla`): the sequence is cut into chunks of Q steps;
inside a chunk the outputs come from a masked Q x Q "attention" with decays
exp(c_t - c_s) (c = cumulative log decay, so every exponent is <= 0); the state
at each chunk end comes from a parallel scan over chunks; each chunk then reads
the state left by the previous one. No loop over time steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from architectures.base import Mixer, MixerOperator
from architectures.operators import Semiseparable
from architectures.scan import linear_scan


class Heads(NamedTuple):
    q: Tensor  # (B, H, L, K)
    k: Tensor  # (B, H, L, K)
    v: Tensor  # (B, H, L, V): the channel inputs of the operator
    log_a: Tensor | None  # (B, H, L, K) or (B, H, L, 1) (decay per head), <= 0; None: no decay
    ctx: object = None  # whatever `finish` needs besides the recurrence output (gates, skips)


def chunked_gla(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_a: Tensor | None,
    chunk_size: int = 16,
    initial_state: Tensor | None = None,
    with_state: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Outputs `(B, H, L, V)` and final state `(B, H, K, V)` of the gated linear recurrence (None
    unless `with_state`: training needs only the outputs)."""
    b, h, length, kdim = q.shape
    vdim = v.shape[-1]
    pad = (-length) % chunk_size
    if pad:
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        if log_a is not None:
            log_a = torch.nn.functional.pad(log_a, (0, 0, 0, pad))
    n_chunks = (length + pad) // chunk_size
    q, k, v = (t.reshape(b, h, n_chunks, chunk_size, t.shape[-1]) for t in (q, k, v))
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    if log_a is None:
        scores = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0.0)
        q_in, k_out, chunk_decay = q, k, None
    else:
        c = log_a.reshape(b, h, n_chunks, chunk_size, log_a.shape[-1]).cumsum(-2)  # inclusive, <= 0
        gaps = (c.unsqueeze(-2) - c.unsqueeze(-3)).masked_fill(~causal[..., None], float("-inf"))  # (.., Q, Q, K|1)
        if log_a.shape[-1] > 1:  # a decay per key dim: sum_k q_tk k_sk exp(c_tk - c_sk), one fused product
            scores = (q.unsqueeze(-2) * k.unsqueeze(-3) * gaps.exp()).sum(-1)
        else:
            scores = (q @ k.transpose(-1, -2)) * gaps.squeeze(-1).exp()
        q_in = q * c.exp()  # decays from the chunk start to t
        k_out = k * (c[..., -1:, :] - c).exp()  # decays from s to the chunk end
        chunk_decay = c[..., -1, :].exp()  # (B, H, n_chunks, K|1)
    intra = scores @ v
    if n_chunks == 1 and initial_state is None:  # one chunk: no state enters it, so the output is intra alone
        out = intra.reshape(b, h, chunk_size, vdim)[:, :, :length]
        return out, ((k_out.transpose(-1, -2) @ v).reshape(b, h, kdim, vdim) if with_state else None)
    # state contributed by each chunk, then the state at every chunk end by a scan over chunks
    contrib = (k_out.transpose(-1, -2) @ v).reshape(b, h, n_chunks, kdim * vdim)
    h0 = None if initial_state is None else initial_state.reshape(b, h, 1, kdim * vdim)
    if chunk_decay is None:  # no decay: the states are running sums
        ends = contrib.cumsum(2) if h0 is None else contrib.cumsum(2) + h0
    else:
        decay = chunk_decay.unsqueeze(-1).expand(b, h, n_chunks, kdim, vdim).reshape(b, h, n_chunks, kdim * vdim)
        ends = linear_scan(decay, contrib, None if h0 is None else h0[:, :, 0])
    ends = ends.reshape(b, h, n_chunks, kdim, vdim)
    start = torch.zeros_like(ends[:, :, :1]) if initial_state is None else initial_state.unsqueeze(2)
    before = torch.cat([start, ends[:, :, :-1]], dim=2)  # state entering each chunk
    out = intra + q_in @ before
    return out.reshape(b, h, n_chunks * chunk_size, vdim)[:, :, :length], ends[:, :, -1]


def recurrent_step(state: Tensor, q: Tensor, k: Tensor, v: Tensor, log_a: Tensor | None) -> tuple[Tensor, Tensor]:
    """One token of the recurrence: q, k `(B, H, K)`, v `(B, H, V)`, log_a `(B, H, K|1)`; state `(B, H, K, V)`."""
    if log_a is not None:
        state = state * log_a.exp().unsqueeze(-1)
    state = state + k.unsqueeze(-1) * v.unsqueeze(-2)
    return (q.unsqueeze(-1) * state).sum(-2), state


class GatedLinearMixer(Mixer):
    """Shared forward / operator / decoding of the gated-linear-attention family.

    A subclass provides `heads(x) -> Heads` (projections, feature maps, decays),
    `finish(o, heads)` (what follows the recurrence: skips, norms, gates, output
    projection, reading `heads.ctx`), and the sizes `num_heads`, `key_dim` (K,
    the state size per value channel) and `value_dim`. `normalize = True`
    divides by q_t . sum_s k_s, as in Katharopoulos et al.'s linear attention.
    """

    normalize: bool = False
    chunk_size: int = 16
    key_dim: int

    def heads(self, x: Tensor) -> Heads:
        raise NotImplementedError

    def finish(self, o: Tensor, hd: Heads) -> Tensor:
        raise NotImplementedError

    def _recurrence(self, hd: Heads) -> Tensor:
        v = hd.v
        if self.normalize:  # the denominator is one more value channel of ones
            v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        o, _ = self._chunked(hd.q, hd.k, v, hd.log_a)
        if self.normalize:
            o = o[..., :-1] / o[..., -1:].clamp_min(1e-6)
        return o

    def _chunked(self, q, k, v, log_a):
        self.kernel = "reference"
        return chunked_gla(q, k, v, log_a, self.chunk_size, with_state=False)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        hd = self.heads(x)
        return self.finish(self._recurrence(hd), hd)

    def _channels(self, t: Tensor, vdim: int) -> Tensor:
        """(B, H, L, K) -> (B, H * V, L, K): every value channel of a head shares its head's operator."""
        b, h, length, kdim = t.shape
        return t.unsqueeze(2).expand(b, h, vdim, length, kdim).reshape(b, h * vdim, length, kdim)

    def operator(self, x: Tensor) -> MixerOperator:
        self.check_input(x)
        hd = self.heads(x)
        b, h, length, vdim = hd.v.shape
        q = hd.q
        if self.normalize:
            q = q / (q * hd.k.cumsum(-2)).sum(-1, keepdim=True).clamp_min(1e-6)
        log_a = None
        if hd.log_a is not None:
            log_a = self._channels(hd.log_a.expand_as(hd.k), vdim)
        matrix = Semiseparable(self._channels(q, vdim), self._channels(hd.k, vdim), log_a)
        inputs = hd.v.permute(0, 1, 3, 2).reshape(b, h * vdim, length)
        outputs = self._recurrence(hd).permute(0, 1, 3, 2).reshape(b, h * vdim, length)
        return MixerOperator(matrix, inputs, outputs)

    def frozen(self, x: Tensor):
        """Values in, recurrence outputs out, with the keys, queries and decays of `x` (its forward's
        chunked recurrence, normalization included)."""
        hd = self.heads(x)

        def mix(inputs: Tensor) -> Tensor:  # (B, H*V, L) -> (B, H*V, L)
            b, _, length = inputs.shape
            v = inputs.reshape(b, self.num_heads, -1, length).transpose(-1, -2)
            return self._recurrence(hd._replace(v=v)).transpose(-1, -2).reshape(inputs.shape)

        return mix

    def readout(self, outputs: Tensor, x: Tensor) -> Tensor:
        b, _, length = outputs.shape
        h = self.num_heads
        return self.finish(outputs.reshape(b, h, -1, length).permute(0, 1, 3, 2), self.heads(x))

    def state_size(self, seq_len: int) -> int:
        return self.key_dim

    def init_state(self, batch_size: int) -> dict[str, Tensor]:
        p = self._param()
        vdim = self.value_dim + (1 if self.normalize else 0)
        return {"S": p.new_zeros(batch_size, self.num_heads, self.key_dim, vdim)}

    def step_heads(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Heads, dict[str, Tensor]]:
        """Heads of one token (L = 1) and state updates; mixers with convolutions override this."""
        return self.heads(x_t.unsqueeze(1)), {}

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        hd, extra = self.step_heads(x_t, state)
        v = hd.v[:, :, 0]
        if self.normalize:
            v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        log_a = None if hd.log_a is None else hd.log_a[:, :, 0]
        o, S = recurrent_step(state["S"], hd.q[:, :, 0], hd.k[:, :, 0], v, log_a)
        if self.normalize:
            o = o[..., :-1] / o[..., -1:].clamp_min(1e-6)
        y = self.finish(o.unsqueeze(2), hd)[:, 0]
        return y, {**state, **extra, "S": S}
