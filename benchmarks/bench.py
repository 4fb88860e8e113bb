"""The sweep driver behind `nox -s bench`: every run of a preset, with progress, resumable.

    python -m benchmarks.bench                       # preset=default
    python -m benchmarks.bench preset=smoke store=/tmp/smoke
    python -m benchmarks.bench architecture=mamba    # narrow the preset's sweep

The sweep is the preset's `hydra.sweeper.params` (the same grid that
`python -m benchmarks.run -m preset=...` hands to a Hydra launcher), expanded
by Hydra's own sweeper; overrides on the command line replace the preset's
values. Runs whose records exist are skipped, so a second call only rebuilds
the leaderboard. Failed runs are recorded and the sweep goes on.
"""

from __future__ import annotations

import sys
import time

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from benchmarks import leaderboard
from benchmarks.overrides import normalize
from benchmarks.run import run_one
from benchmarks.store import Store, run_key


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def expand(overrides: list[str]) -> list[dict]:
    """Resolved configs of every run of the sweep defined by the preset plus `overrides`."""
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_module("benchmarks.conf", version_base="1.3"):
        hydra_cfg = compose("config", overrides=fixed, return_hydra_config=True)
        params = OmegaConf.to_container(hydra_cfg.hydra.sweeper.params or {})
        given = {_key_of(o) for o in overrides}
        grid = [f"{k}={v}" for k, v in params.items() if k not in given] + list(overrides)
        parsed = parser.parse_overrides(grid)
        jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
        configs = []
        for job in jobs:
            cfg = OmegaConf.to_container(compose("config", overrides=job), resolve=True)
            cfg.pop("preset", None)
            configs.append(cfg)
    return configs


def main(argv: list[str] | None = None) -> int:
    overrides = normalize(list(sys.argv[1:] if argv is None else argv))
    configs = expand(overrides)
    if not configs:
        print("nothing to run")
        return 0
    store = Store(configs[0]["store"])
    todo = [c for c in configs if not store.exists(run_key(c))]
    print(f"{len(configs)} runs in the sweep, {len(configs) - len(todo)} already recorded in {store.records_dir}")
    start = time.time()
    failed = 0
    with tqdm(total=len(configs), initial=len(configs) - len(todo), desc="sweep", dynamic_ncols=True) as bar:
        for cfg in todo:
            bar.set_postfix_str(f"{cfg['architecture'].get('name') or cfg['architecture'].get('_target_')} {cfg['task']['name']}")
            record = run_one(cfg)
            if record["status"] != "ok":
                failed += 1
                tqdm.write(f"run {record['key']} failed: {record['error']}")
            bar.update()
    print(f"sweep done in {time.time() - start:.0f}s ({failed} failed)")
    paths = leaderboard.build(store.root)
    for p in paths:
        print(f"leaderboard: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
