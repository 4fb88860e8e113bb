"""From a resolved run config to the things it names, and the checks made before anything trains.

A sweep is a list of run configs; each group (mixer, mixer config, task setting, width, seed,
training budget) is trained at every learning rate of its grid (`architecture.lr_grid`, the
mixer's default in `conf/architecture/<mixer>.yaml`, overridable on the command line), one
run and one record per rate. Keys and types are Hydra's to check, while it composes (the schema in
benchmarks/conf/__init__.py); `validate` checks the rest (ranges, and rules across fields and
groups) by building everything a run needs except the training itself, so a bad configuration
fails in seconds with one line naming the field and the fix, and writes nothing.
"""

from __future__ import annotations

import copy
import itertools
import math
import tempfile
from pathlib import Path

from architectures import registry
from architectures.backbone import MODELS, LanguageModel
from architectures.backbone import NAMES as BACKBONES
from tasks import registry as tasks

LR_GRID = "lr_grid"  # key of the learning-rate grid in the architecture config
STATE_SIZES = "state_sizes"  # the architecture config's state knob and the sizes a sweep's `state` indexes
SWEEP_KEYS = (LR_GRID, STATE_SIZES)  # architecture keys that describe sweeps, not the mixer


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line naming the field and the fix."""


def build_task(task_cfg: dict):
    params = {k: v for k, v in task_cfg.items() if k not in ("name", "level")}
    level = task_cfg.get("level")
    if level is not None:
        ladder = tasks.get(task_cfg["name"]).ladder
        if not isinstance(level, int) or not 0 <= level < len(ladder):
            raise ValueError(f"task.level={level!r} out of range: {task_cfg['name']} has levels 0..{len(ladder) - 1}")
        params.update(ladder[level])
    return tasks.build(task_cfg["name"], **params)


def mixer_spec(arch_cfg: dict) -> tuple[str, dict]:
    """(registry name or "module:Class", constructor config) from the `architecture` config."""
    arch = dict(arch_cfg)
    target = arch.pop("_target_", None)
    name = arch.pop("name", None)
    for key in SWEEP_KEYS:
        arch.pop(key, None)
    if target:
        module, _, cls = target.rpartition(".")
        name = f"{module}:{cls}"
    if not name:
        raise ValueError(
            "architecture: give a mixer: architecture=<name> (one of the registry) or architecture=package.module:Class"
        )
    return name, arch


def resolve_backbone(model_cfg: dict, task) -> dict:
    """`model` with `backbone: auto` replaced by the task's reference suite's (MQAR: zoology, MAD: mad)."""
    backbone = model_cfg.get("backbone", "auto")
    if backbone == "auto":
        backbone = getattr(task, "backbone", "mad")
    if backbone not in BACKBONES:
        raise ConfigError(f"model.backbone: unknown {backbone!r}; give one of auto, {', '.join(BACKBONES)}")
    return {**model_cfg, "backbone": backbone}


def build_model(cfg: dict, task) -> LanguageModel:
    """The model the task trains (MAD's compression: an autoencoder) in the configured backbone, around
    the configured mixer."""
    name, arch = mixer_spec(cfg["architecture"])
    model = MODELS[getattr(task, "model", "language_model")]
    return model(task.vocab_size, name, mixer_config=arch, seq_len=task.seq_len, **resolve_backbone(cfg["model"], task))


def lr_grid(cfg: dict) -> list[float]:
    grid = cfg["architecture"].get(LR_GRID)
    if grid is None:
        return [cfg["train"]["lr"]]
    grid = [grid] if isinstance(grid, (int, float)) else list(grid)
    if not grid or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in grid):
        raise ConfigError(f"architecture.lr_grid: must be a non-empty list of learning rates > 0, e.g. [1e-3,3e-3]; got {grid!r}")
    return sorted(set(float(v) for v in grid))


def state_knob(cfg: dict) -> tuple[str, list] | None:
    """The mixer's state-size knob and the sizes `state=<index>` picks from (None: it has none)."""
    sizes = cfg["architecture"].get(STATE_SIZES) or {}
    if not isinstance(sizes, dict) or len(sizes) > 1:
        raise ConfigError(f"architecture.state_sizes: must map one constructor argument to a list of sizes; got {sizes!r}")
    return next(iter(sizes.items()), None)


def single_run(cfg: dict) -> dict:
    """One run's config as recorded: the sweep keys removed (`train.lr` is the rate it trains at; a
    `state` index set the state knob), and the task's parameters as its `level` sets them, so a
    record says what it trained on."""
    out = copy.deepcopy(cfg)
    out.pop("continue_to", None)  # says what a sweep does with a finished group, not what a run is
    index = out.pop("state", None)  # recorded as the knob's value it set
    knob = state_knob(out) if index is not None else None
    if knob is not None and isinstance(index, int) and 0 <= index < len(knob[1]):
        out["architecture"][knob[0]] = knob[1][index]
    for key in SWEEP_KEYS:
        out["architecture"].pop(key, None)
    try:
        task = build_task(out["task"])
        out["task"] = {"name": task.name, "level": out["task"].get("level"), **task.params()}  # its level applied
        if "model" in out:  # a record names the backbone it trained in
            out["model"] = resolve_backbone(out["model"], task)
    except ValueError:
        pass  # left as given: validate() reports it
    return out


def has_state(cfg: dict) -> bool:
    """Whether `cfg`'s `state` index names one of its mixer's state sizes (no index: yes). A mixer with
    fewer sizes than a sweep's indices (attention has none) is trained once, at index 0."""
    index = cfg.get("state")
    if index is None:
        return True
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ConfigError(f"state: must be null or an index >= 0 into architecture.state_sizes; got {index!r}")
    knob = state_knob(cfg)
    return index < (len(knob[1]) if knob else 1)


def grid_runs(cfg: dict) -> list[dict]:
    """The runs of `cfg`'s group, one per learning rate of its grid; none where `state` indexes past
    the mixer's list of state sizes (`has_state`)."""
    if not has_state(cfg):
        return []
    runs = []
    for lr in lr_grid(cfg):
        run = single_run(cfg)
        run["train"]["lr"] = lr
        runs.append(run)
    return runs


def _positive_int(field: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{field}: must be a positive integer; got {value!r}")


def check_store(root: str | Path) -> None:
    """The store must be (or be creatable as) a writable directory; checked without leaving anything."""
    if not str(root).strip():
        raise ConfigError("store: empty; give store=<a directory>, e.g. store=runs/store")
    path = Path(root).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"store: {existing} is a file, so {path} cannot be created; give store=<a writable directory>")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f"store: {existing} is not writable ({e.strerror}); give store=<a writable directory>") from None


_CONFORMING: set[str] = set()  # mixer configs that passed, so a sweep checks each once


def continuation_caps(cfg: dict) -> list[int]:
    """The caps `continue_to` raises a searched group's capped runs to, in turn: none, one, or a list."""
    caps = cfg.get("continue_to")
    return [] if caps is None else list(caps) if isinstance(caps, (list, tuple)) else [caps]


def check_continuation(cfg: dict) -> None:
    """Raise ConfigError unless `continue_to` (train a group's runs that its search ended at the cap
    further, to this many steps, or to each of a rising list of caps in turn) is unset or can continue
    them: a searched group, caps above its cap."""
    caps = continuation_caps(cfg)
    if not caps:
        return
    for steps in caps:
        _positive_int("continue_to", steps)
    if not cfg["train"].get("rungs"):
        raise ConfigError("continue_to: continues the runs a successive-halving search capped; use a preset whose "
                          "train sets rungs (e.g. preset=published), or drop continue_to")  # fmt: skip
    if caps[0] <= (cap := cfg["train"]["steps"]):
        raise ConfigError(f"continue_to: must exceed train.steps={cap}, the cap it continues from; got {caps[0]}")
    if any(a >= b for a, b in itertools.pairwise(caps)):
        raise ConfigError(f"continue_to: list the caps in rising order, each once (e.g. [48000,96000]); got {caps}")


def continued_config(searched: dict, steps: int) -> dict:
    """The config of the searched run `searched` trained further, to `steps`: the same run with its cap
    raised and no rungs (under the WSD schedule its first steps are the searched run's). Its inverse is
    `searched_config`; the two are the one place this rule is written."""
    return {**searched, "train": {**searched["train"], "steps": steps, "rungs": None}}


def searched_config(continued: dict, budgets: list[int]) -> dict:
    """The config of the search that a continuation (`continued_config`) trains a run of further, from
    the search's `budgets` (its rungs, then its cap; a record keeps them in `metrics.search.rungs`)."""
    return {**continued, "train": {**continued["train"], "steps": budgets[-1], "rungs": list(budgets[:-1])}}


def _check_conformance(name: str, d_model: int, arch: dict) -> None:
    from benchmarks.conformance import check_mixer

    ident = repr((name, d_model, sorted(arch.items())))
    if ident in _CONFORMING:
        return
    report = check_mixer(name, d_model=d_model, **arch)
    if not report.passed:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in report.failures())
        raise ConfigError(f"architecture: {name} fails conformance ({failed}); fix the mixer (nox -s conformance)")
    _CONFORMING.add(ident)


def validate(cfg: dict) -> None:
    """Raise ConfigError (one line: field and fix) if this run's config cannot run; trains nothing."""
    from benchmarks.train import TrainConfig  # torch-heavy module, imported where used

    try:
        lr_grid(cfg)
        try:
            TrainConfig(**cfg["train"])
        except TypeError as e:
            raise ConfigError(f"train: {e}") from None
        if cfg["data"].get("num_train") is not None:  # null: fresh examples every step
            _positive_int("data.num_train", cfg["data"]["num_train"])
        for name in ("num_val", "num_test"):
            _positive_int(f"data.{name}", cfg["data"].get(name))
        _positive_int("ess.num_examples", cfg["ess"]["num_examples"])
        lo, hi = cfg["ess"]["window"]
        if not 0 <= lo < hi <= 1:
            raise ConfigError(f"ess.window: must be [lo, hi] with 0 <= lo < hi <= 1; got {[lo, hi]}")
        if not isinstance(cfg["seed"], int) or cfg["seed"] < 0:
            raise ConfigError(f"seed: must be an integer >= 0; got {cfg['seed']!r}")
        try:
            task = build_task(cfg["task"])
        except ValueError as e:
            raise ConfigError(f"task: {e}") from None
        name, arch = mixer_spec(cfg["architecture"])
        try:
            build_model(cfg, task)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"architecture/model: {e}") from None
        if name not in registry.names():  # a user's mixer must pass the checks the reference mixers pass
            _check_conformance(name, cfg["model"]["d_model"], arch)
        check_store(cfg["store"])
    except ConfigError:
        raise
    except ValueError as e:  # the builders' own messages name the field
        raise ConfigError(str(e).splitlines()[0]) from None


def describe(cfg: dict) -> str:
    """A run's coordinates in a sweep, for messages: mixer, task, level, lr."""
    level = cfg["task"].get("level")
    lr = cfg["train"].get("lr")
    return " ".join(
        s
        for s in (
            mixer_spec(cfg["architecture"])[0] if cfg["architecture"].get("name") or cfg["architecture"].get("_target_") else "?",
            cfg["task"].get("name", "?"),
            f"level={level}" if level is not None else "",
            f"lr={lr:g}" if isinstance(lr, (int, float)) and math.isfinite(lr) else "",
        )
        if s
    )
