"""The config tree's schema: dataclasses in Hydra's ConfigStore (`schema`, first in config.yaml's defaults),
so that Hydra itself refuses a key the tree does not have or a value of the wrong type while composing,
before anything runs. The YAML files keep the values: every field here is MISSING (`???`) until they set
it, so a composed config holds exactly the keys and values it held without the schema (a record's key is
a hash of them: benchmarks.store.run_key). The architecture and task groups take their keys from the
mixer and the task (a dict each); the train group is the trainer's own dataclass (benchmarks.train).
Ranges and rules across fields are checked by hand, in benchmarks/config.py's `validate`.

`${mixers:}` is every reference mixer of the registry (architectures/registry.py), comma-separated, so that
a preset sweeps them all without a list of its own: `architecture: ${mixers:}` in `hydra.sweeper.params`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from architectures import registry
from benchmarks.train import TrainConfig


def mixers() -> str:
    """Every reference mixer (`registry.reference_names`, in the order they joined the suite), comma-
    separated: a sweep over all of them. Never a mixer registered in-process (a user's or a test's)."""
    return ",".join(registry.reference_names())


@dataclass
class ModelSchema:
    backbone: str = MISSING
    d_model: int = MISSING
    n_layers: int = MISSING
    mlp_ratio: int = MISSING


@dataclass
class DataSchema:
    num_train: int | None = MISSING  # null: fresh examples every step
    num_val: int = MISSING
    num_test: int = MISSING


@dataclass
class EssSchema:
    num_examples: int = MISSING
    window: list[float] = MISSING  # `+ess.over_training=false` adds the one optional key


@dataclass
class Schema:
    seed: int = MISSING
    state: int | None = MISSING
    device: str = MISSING
    store: str = MISSING
    progress: bool = MISSING
    workers: int = MISSING
    preset: str | None = None  # the preset's name, set by each preset
    continue_to: Any = None  # a cap or a rising list of caps (benchmarks.config.check_continuation)
    model: ModelSchema = field(default_factory=ModelSchema)
    data: DataSchema = field(default_factory=DataSchema)
    ess: EssSchema = field(default_factory=EssSchema)
    train: TrainConfig = MISSING
    architecture: dict[str, Any] = MISSING
    task: dict[str, Any] = MISSING


ConfigStore.instance().store(name="schema", node=Schema)
OmegaConf.register_new_resolver("mixers", mixers, replace=True)
