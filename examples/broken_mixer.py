"""A deliberately broken out-of-tree mixer: its `operator` does not reproduce its own output
(the matrix is off by 10%). Conformance must reject it and say by how much."""

from __future__ import annotations

from architectures.base import MixerOperator
from benchmarks.ess import Semiseparable
from examples.gated_ema import GatedEMA


class BrokenOperator(GatedEMA):
    name = "broken_operator"

    def operator(self, x):
        op = super().operator(x)
        m = op.matrix
        return MixerOperator(Semiseparable(m.q * 1.1, m.k, m.log_decay), op.inputs, op.outputs)
