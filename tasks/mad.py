"""MAD's synthetic tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures";
athms/mad-lab `mad/data/instances.py` and `configs/tasks/*.yml`).

Defaults are MAD's baseline settings and each ladder is MAD's list of "changes" (one knob at a time
away from the baseline). Recall tasks use MAD's benchmark setting `multi_query=True`: every repeated
key is a query. Differences from MAD, all in how examples are laid out, none in what is asked:
- our convention is `targets[t]` = what to output at position t, sequences are exactly `seq_len`
  long (MAD's recall inputs are `seq_len - 1` after its shift: we keep the trailing value token,
  which is never scored);
- MAD trains on next-token prediction of every token and tests on the task's targets; we train and
  test on the task's targets (as Zoology does for MQAR);
- compression scores every non-noise position (MAD's intent; its code returns the inputs as targets);
- fuzzy recall always places the probed key-value pair inside the sequence (MAD's draw of its position
  can fall past the end, leaving the final query unanswerable);
- random streams are numpy PCG64 per chunk, so distributions match MAD's but bytes do not.
"""

from __future__ import annotations

from itertools import permutations
from typing import ClassVar

import numpy as np

from tasks.base import IGNORE, Task, require_int, running_mode_accuracy


def _require_fraction(task: str, name: str, value: float, upper_inclusive: bool = False) -> None:
    ok = 0 <= value <= 1 if upper_inclusive else 0 <= value < 1
    if not ok:
        raise ValueError(f"{task}: `{name}` must be in [0, 1{']' if upper_inclusive else ')'}; got {value!r}")


class _MADTask(Task):
    """Shared parameter handling: every MAD task has vocab_size and seq_len; recall tasks add noise."""

    source = "MAD (Poli et al. 2024), mad-lab"
    defaults: ClassVar[dict] = {}
    changes: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # MAD's difficulty ladder: the baseline, then each change of one parameter
        cls.ladder = [{}] + [{k: v} for k, values in cls.changes.items() for v in values]

    def __init__(self, **params):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {sorted(unknown)}; parameters: {sorted(self.defaults)}")
        p = {**self.defaults, **params}
        require_int(self.name, vocab_size=p["vocab_size"], seq_len=p["seq_len"])
        self._p = p
        self.vocab_size, self.seq_len = p["vocab_size"], p["seq_len"]
        self._validate(p)

    def __getattr__(self, name):
        p = self.__dict__.get("_p", {})
        if name in p:
            return p[name]
        raise AttributeError(name)

    def _validate(self, p: dict) -> None:
        pass

    def _validate_noise(self, p: dict) -> None:
        """The noise parameters of MAD's recall and compression tasks."""
        require_int(self.name, lo=0, noise_vocab_size=p["noise_vocab_size"])
        _require_fraction(self.name, "frac_noise", p["frac_noise"])
        if p["frac_noise"] > 0 and p["noise_vocab_size"] < 1:
            raise ValueError(f"{self.name}: `noise_vocab_size` must be >= 1 when frac_noise > 0")

    def params(self) -> dict:
        return dict(self._p)


def _recall_vocab(task: str, vocab_size: int, noise_vocab_size: int, special: int) -> tuple[int, int]:
    """Vocabulary split of MAD's recall tasks (multi-query): keys, values, then noise and special tokens."""
    regular = vocab_size - special - noise_vocab_size
    if regular < 2:
        raise ValueError(
            f"{task}: `vocab_size`={vocab_size} leaves {regular} key/value tokens after {noise_vocab_size} noise "
            f"and {special} special tokens; need vocab_size >= {noise_vocab_size + special + 2}"
        )
    return regular // 2, regular  # keys are [0, half), values [half, regular)


class InContextRecall(_MADTask):
    name = "in_context_recall"
    no_recall_rule = "the most frequent value seen so far (values repeat across keys)"
    defaults = {"vocab_size": 16, "seq_len": 128, "noise_vocab_size": 0, "frac_noise": 0.0}
    changes = {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024]}

    def _validate(self, p):
        self._validate_noise(p)
        if p["seq_len"] % 2 or p["seq_len"] < 4:
            raise ValueError(f"{self.name}: `seq_len` must be even and >= 4 (key-value pairs); got {p['seq_len']}")
        self.num_keys, self.regular = _recall_vocab(self.name, p["vocab_size"], p["noise_vocab_size"], special=0)

    @property
    def num_pairs(self) -> int:
        return self.seq_len // 2

    @property
    def memory_demand(self) -> int:
        return min(self.num_keys, self.num_pairs - 1)  # associations that may have to be held

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / (self.regular - self.num_keys)

    def no_recall_accuracy(self, inputs, targets) -> float:
        x = inputs.numpy()
        counted = (x >= self.num_keys) & (x < self.regular)  # value tokens (noise tokens lie above)
        counted[:, 0::2] = False
        return running_mode_accuracy(inputs, targets, counted)

    def _generate_chunk(self, rng, n, split="train"):
        pairs, k = self.num_pairs, self.num_keys
        keys = rng.integers(0, k, size=(n, pairs))
        table = rng.integers(k, self.regular, size=(n, k))  # each key's value, fixed within a sequence
        noise = np.zeros((n, pairs), dtype=bool)
        if self.frac_noise > 0:
            noise[:, : pairs - 1] = rng.random((n, pairs - 1)) < self.frac_noise
            keep = rng.integers(0, pairs - 1, size=n)  # at least one real pair before the probe (as MAD)
            noise[np.arange(n), keep] = False
        real = ~noise
        # first occurrence of each key in a real pair (pairs if never)
        idx = np.broadcast_to(np.arange(pairs), (n, pairs))
        first = np.full((n, k), pairs)
        body = real.copy()
        body[:, -1] = False
        np.minimum.at(first, (np.nonzero(body)[0], keys[body]), idx[body])
        # the final pair probes a key drawn uniformly from the distinct keys presented before it
        keys[:, -1] = np.argmax(np.where(first < pairs, rng.random((n, k)), -1.0), axis=1)
        values = np.take_along_axis(table, keys, axis=1)
        inputs = np.stack([keys, values], axis=-1).reshape(n, 2 * pairs)
        if noise.any():
            noisy = rng.integers(self.regular, self.regular + self.noise_vocab_size, size=(n, 2 * pairs))
            inputs = np.where(np.repeat(noise, 2, axis=1), noisy, inputs)
        # a key position is scored iff that key occurred earlier in a real pair
        seen_before = (np.take_along_axis(first, keys, axis=1) < idx) & real
        targets = np.full((n, 2 * pairs), IGNORE, dtype=np.int64)
        targets[:, 0::2] = np.where(seen_before, values, IGNORE)
        return inputs, targets


class NoisyRecall(InContextRecall):
    name = "noisy_recall"
    defaults = {"vocab_size": 32, "seq_len": 128, "noise_vocab_size": 16, "frac_noise": 0.2}
    changes = {"vocab_size": [48, 80, 144], "seq_len": [256, 512, 1024], "frac_noise": [0.4, 0.6, 0.8]}


class FuzzyRecall(_MADTask):
    """Keys and values are motifs of 1..k_motif_size (1..v_motif_size) tokens; test keys are always
    k_motif_size long (as in MAD). Sequences are left-padded with the pad token to seq_len."""

    name = "fuzzy_recall"
    no_recall_rule = "the most frequent value token seen so far"
    defaults = {"vocab_size": 16, "seq_len": 128, "k_motif_size": 3, "v_motif_size": 3}
    changes = {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024]}

    def _validate(self, p):
        require_int(self.name, k_motif_size=p["k_motif_size"], v_motif_size=p["v_motif_size"])
        self.num_keys, self.regular = _recall_vocab(self.name, p["vocab_size"], 0, special=1)
        if p["k_motif_size"] > self.num_keys or p["v_motif_size"] > self.regular - self.num_keys:
            raise ValueError(
                f"{self.name}: motifs are permutations without repeats: `k_motif_size` <= {self.num_keys} and "
                f"`v_motif_size` <= {self.regular - self.num_keys} for vocab_size={p['vocab_size']}"
            )
        if p["seq_len"] < 4 * (p["k_motif_size"] + p["v_motif_size"]):
            raise ValueError(f"{self.name}: `seq_len` must be >= 4 * (k_motif_size + v_motif_size); got {p['seq_len']}")
        self.pad_token = p["vocab_size"] - 1

    @property
    def memory_demand(self) -> int:
        return self.seq_len // (self.k_motif_size + self.v_motif_size)  # key-value motifs in a sequence

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / (self.regular - self.num_keys)

    def no_recall_accuracy(self, inputs, targets) -> float:
        x = inputs.numpy()
        return running_mode_accuracy(inputs, targets, (x >= self.num_keys) & (x < self.regular))

    def _table(self, vocab: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, int]]]:
        """Every motif (distinct tokens, each size in `sizes`) as a padded row: motifs, lengths, size -> (offset, count)."""
        width = max(sizes)
        rows, lengths, index = [], [], {}
        for size in sizes:
            motifs = [list(m) + [-1] * (width - size) for m in permutations(vocab.tolist(), size)]
            index[size] = (len(rows), len(motifs))
            rows += motifs
            lengths += [size] * len(motifs)
        return np.array(rows, dtype=np.int64), np.array(lengths, dtype=np.int64), index

    @staticmethod
    def _draw(rng, index: dict, sizes: list[int], shape) -> np.ndarray:
        """Motif codes: a size uniform in `sizes`, then a motif uniform among those of that size."""
        which = rng.integers(len(sizes), size=shape)
        offset = np.array([index[s][0] for s in sizes])[which]
        count = np.array([index[s][1] for s in sizes])[which]
        return offset + (rng.random(shape) * count).astype(np.int64)

    @staticmethod
    def _first_occurrence(codes: np.ndarray) -> np.ndarray:
        """For each slot, the index of the first slot in its row with the same code."""
        order = np.argsort(codes, axis=1, kind="stable")
        ordered = np.take_along_axis(codes, order, axis=1)
        starts = np.ones_like(ordered, dtype=bool)
        starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        run_start = np.maximum.accumulate(np.where(starts, np.arange(codes.shape[1]), 0), axis=1)
        first = np.empty_like(codes)
        np.put_along_axis(first, order, np.take_along_axis(order, run_start, axis=1), axis=1)
        return first

    def _generate_chunk(self, rng, n, split="train"):
        """MAD's sequential construction, vectorised: a sequence is a run of key-value pairs drawn i.i.d.
        (a repeated key keeps the value of its first occurrence), with the probed pair inserted at the
        first pair starting at or after `probe_at` unless its key occurred earlier; pairs are added
        while the sequence is shorter than the body bound; the probe closes the sequence."""
        kmax, vmax, length = self.k_motif_size, self.v_motif_size, self.seq_len
        key_sizes = list(range(1, kmax + 1)) if split == "train" else [kmax]
        keys, key_len, key_index = self._table(np.arange(self.num_keys), key_sizes)
        values, value_len, value_index = self._table(np.arange(self.num_keys, self.regular), list(range(1, vmax + 1)))
        value_sizes = list(range(1, vmax + 1))
        probe_k = self._draw(rng, key_index, key_sizes, n)
        probe_v = self._draw(rng, value_index, value_sizes, n)
        bound = length - key_len[probe_k] - value_len[probe_v] - (kmax + vmax)
        # MAD draws this from [0, seq_len - 2 * probe_size), which can fall past the body and leave
        # the final query unanswerable; we draw it inside the body so every query has an answer
        probe_at = (rng.random(n) * bound).astype(np.int64)
        slots = length // 2 + 1  # enough pairs of >= 2 tokens to pass any bound
        codes = self._draw(rng, key_index, key_sizes, (n, slots))
        drawn_values = self._draw(rng, value_index, value_sizes, (n, slots))
        rows = np.arange(n)[:, None]
        idx = np.broadcast_to(np.arange(slots), (n, slots))

        def layout(codes):
            first = self._first_occurrence(codes)
            vals = np.where(codes == probe_k[:, None], probe_v[:, None], drawn_values[rows, first])
            sizes = key_len[codes] + value_len[vals]
            return first, vals, np.cumsum(sizes, axis=1) - sizes  # start of each pair

        _, _, start = layout(codes)
        insert_at = np.argmax(start >= probe_at[:, None], axis=1)
        natural = np.where((codes == probe_k[:, None]).any(1), np.argmax(codes == probe_k[:, None], axis=1), slots)
        insert = natural >= insert_at  # the probe key was not drawn before the insertion point
        codes[np.flatnonzero(insert), insert_at[insert]] = probe_k[insert]
        first, vals, start = layout(codes)
        included = start < bound[:, None]
        scored = first < idx  # a key already presented: its value is a query

        # tokens and targets of every pair slot, then the final probe, packed left-padded
        width = kmax + vmax
        pos = np.arange(width)
        klen, vlen = key_len[codes][..., None], value_len[vals][..., None]
        key_tok = keys[codes][..., np.minimum(pos, kmax - 1)]
        val_tok = np.take_along_axis(values[vals], np.clip(pos - klen, 0, vmax - 1), axis=2)
        is_key, is_val = pos < klen, (pos >= klen) & (pos < klen + vlen)
        tokens = np.where(is_key, key_tok, val_tok)
        tgt = np.where(is_val & scored[..., None], val_tok, IGNORE)
        mask = (is_key | is_val) & included[..., None]
        plen_k, plen_v = key_len[probe_k][:, None], value_len[probe_v][:, None]
        ppos = np.arange(width)[None]
        p_key = keys[probe_k][:, np.minimum(pos, kmax - 1)]
        p_val = np.take_along_axis(values[probe_v], np.clip(ppos - plen_k, 0, vmax - 1), axis=1)
        p_tok = np.where(ppos < plen_k, p_key, p_val)
        p_mask = ppos < plen_k + plen_v
        p_tgt = np.where((ppos >= plen_k) & p_mask, p_tok, IGNORE)
        tokens = np.concatenate([tokens.reshape(n, -1), p_tok], axis=1)
        tgt = np.concatenate([tgt.reshape(n, -1), p_tgt], axis=1)
        mask = np.concatenate([mask.reshape(n, -1), p_mask], axis=1)
        total = mask.sum(1, keepdims=True)
        dest = np.where(mask, length + 1 - total + np.cumsum(mask, axis=1) - 1, length + 1)  # pads go to a spare column
        inputs = np.full((n, length + 2), self.pad_token, dtype=np.int64)
        targets = np.full((n, length + 2), IGNORE, dtype=np.int64)
        np.put_along_axis(inputs, dest, np.where(mask, tokens, self.pad_token), axis=1)
        np.put_along_axis(targets, dest, np.where(mask, tgt, IGNORE), axis=1)
        inputs, targets = inputs[:, : length + 1], targets[:, : length + 1]
        # shift into our convention: the target at t is the token that follows t
        return inputs[:, :-1], targets[:, 1:]


class SelectiveCopying(_MADTask):
    """The tokens to copy are scattered among blanks (MAD inserts the blanks before uniformly chosen
    tokens, so none follow the last one); at the blanks after the copy token they are output in order."""

    name = "selective_copying"
    no_recall_rule = "the most frequent content token seen so far (the right tokens, not their order)"
    defaults = {"vocab_size": 16, "seq_len": 256, "num_tokens_to_copy": 16}
    changes = {"vocab_size": [32, 64, 128], "seq_len": [512, 1024], "num_tokens_to_copy": [32, 64, 96]}

    def _validate(self, p):
        require_int(self.name, num_tokens_to_copy=p["num_tokens_to_copy"])
        if p["seq_len"] <= 2 * p["num_tokens_to_copy"] + 1:
            raise ValueError(
                f"{self.name}: `seq_len`={p['seq_len']} must exceed "
                f"2 * num_tokens_to_copy + 1 = {2 * p['num_tokens_to_copy'] + 1}"
            )
        if p["vocab_size"] < 3:
            raise ValueError(f"{self.name}: `vocab_size` must be >= 3 (blank and copy tokens are reserved)")
        self.copy_token, self.blank_token = p["vocab_size"] - 1, p["vocab_size"] - 2

    @property
    def memory_demand(self) -> int:
        return self.num_tokens_to_copy

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / (self.vocab_size - 2)

    def no_recall_accuracy(self, inputs, targets) -> float:
        return running_mode_accuracy(inputs, targets, inputs.numpy() < self.vocab_size - 2)

    def _generate_chunk(self, rng, n, split="train"):
        k, length = self.num_tokens_to_copy, self.seq_len
        blanks = length - 2 * k - 1
        tokens = rng.integers(0, self.vocab_size - 2, size=(n, k))
        before = rng.multinomial(blanks, [1.0 / k] * k, size=n)  # blanks inserted before each token
        positions = np.cumsum(before, axis=1) + np.arange(k)
        inputs = np.full((n, length), self.blank_token, dtype=np.int64)
        np.put_along_axis(inputs, positions, tokens, axis=1)
        inputs[:, length - k - 1] = self.copy_token
        targets = np.full((n, length), IGNORE, dtype=np.int64)
        targets[:, length - k :] = tokens  # the j-th blank after the copy token outputs token j (as MAD)
        return inputs, targets


class Compression(_MADTask):
    """Random tokens then a compression token; an MLP decoder must rebuild every token from the
    encoder's state at the compression token (MAD's autoencoder backbone)."""

    name = "compression"
    no_recall_rule = "the sequence's most frequent token, everywhere (its statistics, not its order)"
    model = "autoencoder"
    defaults = {"vocab_size": 16, "seq_len": 32, "noise_vocab_size": 0, "frac_noise": 0.0}
    changes = {"vocab_size": [32, 64, 128], "seq_len": [64, 128, 256]}

    def _validate(self, p):
        self._validate_noise(p)
        if p["vocab_size"] - 1 - p["noise_vocab_size"] < 1:
            raise ValueError(f"{self.name}: `vocab_size` must exceed noise_vocab_size + 1 (the compression token)")
        self.regular = p["vocab_size"] - 1 - p["noise_vocab_size"]

    @property
    def memory_demand(self) -> int:
        return self.seq_len - 1

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / self.regular

    def no_recall_accuracy(self, inputs, targets) -> float:
        return running_mode_accuracy(inputs, targets, inputs.numpy() < self.regular, causal=False)

    def _generate_chunk(self, rng, n, split="train"):
        inputs = rng.integers(0, self.regular, size=(n, self.seq_len))
        inputs[:, -1] = self.vocab_size - 1
        targets = inputs.copy()
        if self.frac_noise > 0:
            noisy = rng.random((n, self.seq_len - 1)) < self.frac_noise
            noise = rng.integers(self.regular, self.regular + self.noise_vocab_size, size=(n, self.seq_len - 1))
            inputs[:, :-1] = np.where(noisy, noise, inputs[:, :-1])
            targets[:, :-1] = np.where(noisy, IGNORE, targets[:, :-1])
        return inputs, targets


class Memorization(_MADTask):
    """A fixed key -> value map (seeded by `kv_map_seed`, shared by all examples) must be learned into
    the weights: inputs alternate key, insert token; the value is the target at the insert token."""

    name = "memorization"
    no_recall_rule = "the most frequent value overall (no memorized key -> value map)"
    defaults = {"vocab_size": 256, "seq_len": 32, "kv_map_seed": 12345}
    changes = {"vocab_size": [512, 1024, 2048, 4096, 8192]}

    def _validate(self, p):
        if p["seq_len"] % 2:
            raise ValueError(f"{self.name}: `seq_len` must be even (key, insert-token pairs); got {p['seq_len']}")
        if p["vocab_size"] < 3:
            raise ValueError(f"{self.name}: `vocab_size` must be >= 3 (one key, one value, the insert token)")
        regular = p["vocab_size"] - 1
        self.num_keys = regular // 2
        map_rng = np.random.Generator(np.random.PCG64(p["kv_map_seed"]))
        self.value_of = regular // 2 + map_rng.permutation(regular - regular // 2)[: self.num_keys]

    @property
    def memory_demand(self) -> int:
        return self.num_keys  # held in the weights, not in the state

    @property
    def chance_accuracy(self) -> float:
        return 1.0 / (self.vocab_size - 1 - self.num_keys)

    def _generate_chunk(self, rng, n, split="train"):
        keys = rng.integers(0, self.num_keys, size=(n, self.seq_len // 2))
        inputs = np.full((n, self.seq_len), self.vocab_size - 1, dtype=np.int64)
        inputs[:, 0::2] = keys
        targets = np.full((n, self.seq_len), IGNORE, dtype=np.int64)
        targets[:, 1::2] = self.value_of[keys]
        return inputs, targets


MAD_TASKS = (InContextRecall, NoisyRecall, FuzzyRecall, SelectiveCopying, Compression, Memorization)
