"""Multi-query associative recall, as Zoology defines it (Arora et al. 2023, "Zoology: Measuring and
Improving Recall in Efficient Language Models"; HazyResearch/zoology `multiquery_ar`).

Layout of one example of length `seq_len`:
- the first 2 * num_kv_pairs tokens are key, value, key, value, ...; keys are distinct draws from
  [1, vocab_size/2), values distinct draws from [vocab_size/2, vocab_size);
- the remaining positions hold every key once more as a query, at position 2 * num_kv_pairs + 2 g,
  the gaps g drawn without replacement from [0, space) with p(g) ∝ (g + 1)^(power_a - 1),
  space = (seq_len - 2 * num_kv_pairs) / 2;
- at a query position the target is the value that followed that key; all other targets are -100;
- every other position holds a uniformly random token from [0, vocab_size) (Zoology's
  `random_non_queries=True`).

Differences from Zoology: the random stream (numpy PCG64 per 1024-example chunk, Gumbel top-k for
the weighted draw without replacement) gives the same distribution, not the same bytes; train and
test come from separate seeds with overlaps removed (Zoology only warns).
"""

from __future__ import annotations

import numpy as np

from tasks.base import IGNORE, Task, require_int, running_mode_accuracy, sample_without_replacement


class MQAR(Task):
    name = "mqar"
    source = "Zoology (Arora et al. 2023), multiquery_ar"
    backbone = "zoology"  # the model Zoology trains on MQAR (architectures.backbone)
    # Zoology Fig. 2: sequence length 64 -> 512 with kv pairs 4 -> 64
    ladder = [
        {"seq_len": 64, "num_kv_pairs": 4},
        {"seq_len": 64, "num_kv_pairs": 8},
        {"seq_len": 64, "num_kv_pairs": 16},
        {"seq_len": 128, "num_kv_pairs": 32},
        {"seq_len": 256, "num_kv_pairs": 64},
        {"seq_len": 512, "num_kv_pairs": 64},
    ]

    no_recall_rule = "a uniform guess among the values of the context's kv pairs (right value, wrong key)"

    def __init__(self, vocab_size: int = 8192, seq_len: int = 64, num_kv_pairs: int = 8, power_a: float = 0.01):
        # defaults: Zoology's vocab_size 8192, input_seq_len 64, num_kv_pairs 8, power_a 0.01
        require_int(self.name, vocab_size=vocab_size, seq_len=seq_len, num_kv_pairs=num_kv_pairs)
        if seq_len % 2:
            raise ValueError(f"mqar: `seq_len` must be even (queries sit on every other position); got {seq_len}")
        if 4 * num_kv_pairs > seq_len:
            raise ValueError(
                f"mqar: `num_kv_pairs`={num_kv_pairs} does not fit: the kv pairs and their queries need "
                f"4 * num_kv_pairs <= seq_len={seq_len}, so num_kv_pairs <= {seq_len // 4}"
            )
        if vocab_size <= seq_len:
            raise ValueError(f"mqar: `vocab_size` must exceed seq_len={seq_len} (Zoology's condition); got {vocab_size}")
        if num_kv_pairs > vocab_size // 2 - 1:
            raise ValueError(
                f"mqar: `vocab_size`={vocab_size} too small for {num_kv_pairs} distinct keys from the disjoint key half "
                f"[1, {vocab_size // 2}); need vocab_size >= {2 * (num_kv_pairs + 1)}"
            )
        if not (isinstance(power_a, (int, float)) and 0 < power_a):
            raise ValueError(f"mqar: `power_a` must be > 0 (1.0 is uniform); got {power_a!r}")
        self.vocab_size, self.seq_len, self.num_kv_pairs, self.power_a = vocab_size, seq_len, num_kv_pairs, float(power_a)

    def params(self) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "num_kv_pairs": self.num_kv_pairs,
            "power_a": self.power_a,
        }

    @property
    def memory_demand(self) -> int:
        return self.num_kv_pairs

    @property
    def chance_accuracy(self) -> float:
        # a model that knows which values occurred but not which key they followed
        return 1.0 / self.num_kv_pairs

    def no_recall_accuracy(self, inputs, targets) -> float:
        counted = np.zeros(inputs.shape, dtype=bool)
        counted[:, 1 : 2 * self.num_kv_pairs : 2] = True  # the values of the kv pairs, all distinct: a tie
        return running_mode_accuracy(inputs, targets, counted)

    @property
    def space(self) -> int:
        return (self.seq_len - 2 * self.num_kv_pairs) // 2

    def gap_probabilities(self) -> np.ndarray:
        """p(g) for the query gap g in [0, space): ∝ power_a * (g + 1)^(power_a - 1)."""
        p = self.power_a * np.arange(1, self.space + 1, dtype=np.float64) ** (self.power_a - 1)
        return p / p.sum()

    def _generate_chunk(self, rng: np.random.Generator, n: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        kv, half, length = self.num_kv_pairs, self.vocab_size // 2, self.seq_len
        context = 2 * kv
        keys = 1 + sample_without_replacement(rng, n, half - 1, kv)
        values = half + sample_without_replacement(rng, n, self.vocab_size - half, kv)
        gaps = sample_without_replacement(rng, n, self.space, kv, np.log(self.gap_probabilities()))
        inputs = rng.integers(0, self.vocab_size, size=(n, length))  # random non-query filler
        targets = np.full((n, length), IGNORE, dtype=np.int64)
        inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
        query_pos = context + 2 * gaps
        np.put_along_axis(inputs, query_pos, keys, axis=1)
        np.put_along_axis(targets, query_pos, values, axis=1)
        return inputs, targets
