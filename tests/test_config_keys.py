"""Record keys are hashes of the resolved run configs (benchmarks.store.run_key, group_key): a change to the
config tree that adds, drops or reorders anything a run resolves to would orphan every record of a running
sweep. tests/config_keys.json holds the keys every run and group of these presets expanded to, in order,
before the configs were typed; a preset must still expand to exactly them."""

import json
from pathlib import Path

import pytest

from architectures import registry
from benchmarks.bench import expand
from benchmarks.config import grid_runs, single_run
from benchmarks.store import group_key, run_key

KEYS = json.loads((Path(__file__).parent / "config_keys.json").read_text())


@pytest.mark.parametrize("preset", sorted(KEYS))
def test_a_preset_expands_to_the_same_runs_in_the_same_order(preset):
    groups = expand([f"preset={preset}"])
    assert [group_key(single_run(g)) for g in groups] == KEYS[preset]["groups"]
    assert [run_key(r) for g in groups for r in grid_runs(g)] == KEYS[preset]["runs"]


def test_hydra_s_own_sweeper_expands_the_registry_s_mixers():
    """`python -m benchmarks.run -m preset=published` hands the sweep to Hydra's sweeper, not to bench.expand:
    it must resolve `${mixers:}` to the same list."""
    from hydra import compose, initialize_config_module
    from hydra.core.plugins import Plugins

    from benchmarks.conf import mixers

    with initialize_config_module("benchmarks.conf", version_base="1.3"):
        cfg = compose("config", overrides=["preset=published"], return_hydra_config=True)
        sweeper = Plugins.instance()._instantiate(cfg.hydra.sweeper)
    assert f"architecture={mixers()}" in sweeper._parse_config()
    assert mixers().split(",") == registry.reference_names()


@pytest.mark.parametrize(
    "override", ["train.steps=abc", "train.rungs=[a]", "data.num_val=x", "model.d_model=1.5", "progress=maybe"]
)
def test_hydra_refuses_a_value_of_the_wrong_type_while_composing(override):
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ValidationError

    with initialize_config_module("benchmarks.conf", version_base="1.3"), pytest.raises(ConfigCompositionException) as e:
        compose("config", overrides=["preset=smoke", override])
    assert isinstance(e.value.__cause__, ValidationError) and e.value.__cause__.full_key.startswith(override.split("=")[0])


def test_the_optional_keys_can_still_be_added():
    cfg = expand(["preset=smoke", "+ess.over_training=false", "+model.conv_kernel=4", "architecture=lru"])[0]
    assert cfg["ess"]["over_training"] is False and cfg["model"]["conv_kernel"] == 4
