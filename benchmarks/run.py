"""One benchmark run: train a mixer on a task, measure accuracy, ESS, TSS and cache; write one record.

    python -m benchmarks.run architecture=mamba task.num_kv_pairs=16       # one run
    python -m benchmarks.run -m architecture=attention,mamba task.level=0,1   # a Hydra multirun sweep

One run trains at one learning rate, `train.lr` (a sweep, `benchmarks.bench`, trains every
rate of the mixer's `architecture.lr_grid`). The config is checked before anything trains: a bad
one exits with one line naming the field and the fix, and writes nothing. A run whose record
already exists is skipped; a crash or a NaN loss during training is recorded as `failed` with the
error, and the caller (a sweep) goes on.
"""

from __future__ import annotations

import sys
import time
import traceback
from datetime import datetime, timezone

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from architectures.backbone import LanguageModel
from architectures.base import cache_bytes, decode
from benchmarks import ess as ess_lib
from benchmarks.config import ConfigError, build_model, build_task, describe, has_state, mixer_spec, single_run, validate
from benchmarks.overrides import explain, normalize
from benchmarks.provenance import provenance
from benchmarks.store import Store, group_key, run_key
from benchmarks.train import TrainConfig, train


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available; use device=cpu or device=auto")
    return device


@torch.no_grad()
def measure_cache(model: LanguageModel, seq_len: int, device: torch.device) -> dict:
    """Bytes of every layer's decoding state after `seq_len` tokens (batch 1), from the tensors held:
    the mixer's layers and any BaseConv layer the backbone added (its k - 1 past inputs)."""
    per_layer = []
    for mixer in (block.mixer for block in model.blocks):
        x = torch.zeros(1, seq_len, mixer.d_model, device=device)
        _, state = decode(mixer, x)
        per_layer.append(cache_bytes(state))
    return {"cache_bytes_per_layer": per_layer, "cache_bytes": sum(per_layer)}


def execute(cfg: dict, device: torch.device) -> dict:
    """Train and measure; returns the metrics of a successful run."""
    seed = cfg["seed"]
    torch.manual_seed(seed)
    task = build_task(cfg["task"])
    model = build_model(cfg, task)
    train_cfg = TrainConfig(**cfg["train"])
    data = task.splits(cfg["data"]["num_train"], cfg["data"]["num_val"], cfg["data"]["num_test"], seed)
    label = f"{mixer_spec(cfg['architecture'])[0]} {task.name} L={task.seq_len} lr={train_cfg.lr:g}"
    window = tuple(cfg["ess"]["window"])
    ess_inputs = data.val[0][: cfg["ess"]["num_examples"]].to(device)  # over training: validation examples

    def ess_now(m) -> dict:
        summary = ess_lib.summarize(ess_lib.model_ess(m, ess_inputs), window)
        return {"ess": {k: summary[k] for k in ("ess_mean", "entropy_ess_mean", "utilization", "ess_mean_by_tolerance")}}

    result = train(
        model, data.train, data.val, data.test, train_cfg, device, seed, progress=cfg.get("progress", True), desc=label,
        measure=ess_now if cfg["ess"].get("over_training", True) else None,
    )  # fmt: skip
    if not all(torch.isfinite(torch.tensor(result[k])) for k in ("accuracy", "loss")):
        raise ArithmeticError(f"evaluation produced non-finite metrics {result['accuracy']}, {result['loss']}")
    start = time.perf_counter()
    layers = ess_lib.model_ess(model, data.test[0][: cfg["ess"]["num_examples"]].to(device))
    summary = ess_lib.summarize(layers, window)
    conv_ess = None
    if model.convs:  # the BaseConv layers' own ESS (<= kernel - 1 by construction), kept beside the headline
        conv_ess = ess_lib.summarize(ess_lib.model_ess(model, data.test[0][: cfg["ess"]["num_examples"]].to(device), layers="convs"), window)
        conv_ess = {k: conv_ess[k] for k in ("ess_mean", "ess_max", "entropy_ess_mean", "tss", "per_layer")}
    # where a run's time goes: training steps, evaluations, ESS over training, and the final ESS
    seconds = dict(result["seconds"])
    seconds["ess_over_training"] = seconds.pop("measure")
    seconds["final_ess"] = round(time.perf_counter() - start, 2)
    return {
        "accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "val_accuracy": result["val_accuracy"],
        "val_loss": result["val_loss"],
        "steps": result["steps"],
        "best_step": result["best_step"],
        "stopped": result["stopped"],
        "history": result["history"],
        "seconds": seconds,
        "task": {
            "name": task.name,
            "level": cfg["task"].get("level"),
            **task.params(),
            "memory_demand": task.memory_demand,
            "chance_accuracy": task.chance_accuracy,
            "no_recall_accuracy": task.no_recall_accuracy(*data.test),
            "no_recall_rule": task.no_recall_rule,
        },
        "ess": summary,
        "tss": summary["tss"],
        "utilization": summary["utilization"],
        "backbone": cfg["model"]["backbone"],
        "conv_ess": conv_ess,
        # state per channel of every layer, the BaseConv's included: what a recurrence of the whole
        # model must carry (the headline `tss` is the mixer layer's, the bound on its ESS)
        "tss_by_layer": [int(b.mixer.state_size(task.seq_len)) for b in model.blocks],
        "parameters": sum(p.numel() for p in model.parameters()),
        **measure_cache(model, task.seq_len, device),
        "kernels": sorted({m.kernel for m in model.mixers}),
    }


def run_one(cfg: dict, force: bool = False, check: bool = True) -> dict:
    """Run `cfg` (one learning rate) unless its record exists; always returns the (new or existing)
    record. The config is validated first (`check=False` when the caller already did): a bad one
    raises ConfigError and writes nothing; only failures during training become `failed` records."""
    cfg = single_run(cfg)
    store = Store(cfg["store"])
    key = run_key(cfg)
    if not force and (record := store.get(key)) is not None:
        return record
    if check:
        validate(cfg)
    with store.claim(key) as mine:
        if not mine:  # another sweep on this store is training it: its record will land there
            return {"key": key, "config": cfg, "status": "claimed", "error": f"being trained by another process ({store.records_dir})"}
        if not force and (record := store.get(key)) is not None:  # it finished while this process got here
            return record
        return _train_and_record(cfg, key, store)


def _train_and_record(cfg: dict, key: str, store: Store) -> dict:
    device = resolve_device(cfg.get("device", "auto"))
    start = time.time()
    record = {
        "key": key,
        "group": group_key(cfg),
        "config": cfg,
        "seed": cfg["seed"],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(device),
    }
    try:
        record["metrics"] = execute(cfg, device)
        record["status"] = "ok"
    except KeyboardInterrupt:
        raise  # an interrupted run leaves no record: the resumed sweep runs it again
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded, the sweep goes on
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=8)
    record["wall_time_s"] = round(time.time() - start, 2)
    store.write(record)
    return record


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for k in ("preset", "sweep_progress"):
        resolved.pop(k, None)
    try:
        if not has_state(resolved):  # a sweep's state=1 for a mixer with fewer sizes (attention has none)
            print(f"[skip] {describe(resolved)}: its mixer has no state size {resolved['state']}")
            return
        record = run_one(resolved)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        sys.exit(2)
    status = record["status"]
    acc = record.get("metrics", {}).get("accuracy")
    print(f"[{status}] {record['key']} accuracy={acc} -> {Store(resolved['store']).path(record['key'])}")
    if status != "ok":
        print(record["error"])
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.RUN:  # one run: say it failed; a multirun goes on to the next
            sys.exit(1)


def check_composes(overrides: list[str]) -> None:
    """Compose the config before Hydra's main does, so a typo exits with one line naming the key."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_module("benchmarks.conf", version_base="1.3"):
            compose("config", overrides=[o for o in overrides if not o.startswith(("-", "hydra"))])
    except (HydraException, OmegaConfBaseException) as e:
        if "-m" in overrides or "--multirun" in overrides:
            return  # sweep syntax (a,b,c) is Hydra's to expand: let it report
        print(f"configuration error: {explain(e, overrides)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *normalize(sys.argv[1:])]
    check_composes(sys.argv[1:])
    main()
