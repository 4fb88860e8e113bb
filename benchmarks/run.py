"""One benchmark run: train a mixer on a task, measure accuracy, ESS, TSS and cache; write one record.

    python -m benchmarks.run architecture=mamba task.num_kv_pairs=16       # one run
    python -m benchmarks.run -m architecture=attention,mamba task.level=0,1   # a Hydra multirun sweep

A run whose record already exists is skipped; a crash or a NaN loss is
recorded as `failed` with the error, and the caller (a sweep) goes on.
"""

from __future__ import annotations

import sys
import time
import traceback
from datetime import datetime, timezone

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from architectures import registry
from architectures.backbone import BACKBONES, LanguageModel
from architectures.base import cache_bytes, decode
from benchmarks import ess as ess_lib
from benchmarks.conformance import check_mixer
from benchmarks.overrides import normalize
from benchmarks.provenance import provenance
from benchmarks.store import Store, run_key
from benchmarks.train import TrainConfig, train
from tasks import registry as tasks


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available; use device=cpu or device=auto")
    return device


def build_task(task_cfg: dict):
    params = {k: v for k, v in task_cfg.items() if k not in ("name", "level")}
    level = task_cfg.get("level")
    if level is not None:
        ladder = tasks.get(task_cfg["name"]).ladder
        if not 0 <= level < len(ladder):
            raise ValueError(f"task.level={level} out of range: {task_cfg['name']} has levels 0..{len(ladder) - 1}")
        params.update(ladder[level])
    return tasks.build(task_cfg["name"], **params)


def mixer_spec(arch_cfg: dict) -> tuple[str, dict]:
    """(registry name or "module:Class", constructor config) from the `architecture` config."""
    arch = dict(arch_cfg)
    target = arch.pop("_target_", None)
    name = arch.pop("name", None)
    if target:
        module, _, cls = target.rpartition(".")
        name = f"{module}:{cls}"
    if not name:
        raise ValueError(
            "architecture: give a mixer: architecture=<name> (one of the registry) or architecture=package.module:Class"
        )
    return name, arch


def build_model(cfg: dict, task) -> LanguageModel:
    """The backbone the task asks for (MAD's compression: an autoencoder) around the configured mixer."""
    name, arch = mixer_spec(cfg["architecture"])
    backbone = BACKBONES[getattr(task, "backbone", "language_model")]
    return backbone(task.vocab_size, name, mixer_config=arch, seq_len=task.seq_len, **cfg["model"])


def check_out_of_tree(cfg: dict) -> None:
    """A mixer from outside the registry must pass the conformance checks before it is trained."""
    name, arch = mixer_spec(cfg["architecture"])
    if name in registry.names():
        return
    check_mixer(name, d_model=cfg["model"]["d_model"], **arch).raise_if_failed()


@torch.no_grad()
def measure_cache(model: LanguageModel, seq_len: int, device: torch.device) -> dict:
    """Bytes of every layer's decoding state after `seq_len` tokens (batch 1), from the tensors held."""
    per_layer = []
    for mixer in model.mixers:
        x = torch.zeros(1, seq_len, mixer.d_model, device=device)
        _, state = decode(mixer, x)
        per_layer.append(cache_bytes(state))
    return {"cache_bytes_per_layer": per_layer, "cache_bytes": sum(per_layer)}


def execute(cfg: dict, device: torch.device) -> dict:
    """Train and measure; returns the metrics of a successful run."""
    seed = cfg["seed"]
    check_out_of_tree(cfg)
    torch.manual_seed(seed)
    task = build_task(cfg["task"])
    model = build_model(cfg, task)
    train_cfg = TrainConfig(**cfg["train"])
    train_set, test_set = task.splits(cfg["data"]["num_train"], cfg["data"]["num_test"], seed)
    label = f"{mixer_spec(cfg['architecture'])[0]} {task.name} L={task.seq_len}"
    result = train(model, train_set, test_set, train_cfg, device, seed, progress=cfg.get("progress", True), desc=label)
    test = {"accuracy": result["accuracy"], "loss": result["loss"]}  # train() evaluates the final model
    if not all(torch.isfinite(torch.tensor(v)) for v in test.values()):
        raise ArithmeticError(f"evaluation produced non-finite metrics {test}")
    window = tuple(cfg["ess"]["window"])
    layers = ess_lib.model_ess(model, test_set[0][: cfg["ess"]["num_examples"]].to(device))
    summary = ess_lib.summarize(layers, window)
    return {
        "accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "steps": result["steps"],
        "history": result["history"],
        "task": {
            "name": task.name,
            **task.params(),
            "memory_demand": task.memory_demand,
            "chance_accuracy": task.chance_accuracy,
        },
        "ess": summary,
        "tss": summary["tss"],
        "utilization": summary["utilization"],
        "parameters": sum(p.numel() for p in model.parameters()),
        **measure_cache(model, task.seq_len, device),
        "kernels": sorted({m.kernel for m in model.mixers}),
    }


def run_one(cfg: dict, force: bool = False) -> dict:
    """Run `cfg` unless its record exists; always returns the (new or existing) record."""
    store = Store(cfg["store"])
    key = run_key(cfg)
    if store.exists(key) and not force:
        return store.read(key)
    start = time.time()
    record = {
        "key": key,
        "config": cfg,
        "seed": cfg["seed"],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        device = resolve_device(cfg.get("device", "auto"))
        record["provenance"] = provenance(device)
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
    record = run_one(resolved)
    status = record["status"]
    acc = record.get("metrics", {}).get("accuracy")
    print(f"[{status}] {record['key']} accuracy={acc} -> {Store(resolved['store']).path(record['key'])}")
    if status != "ok":
        print(record["error"])


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *normalize(sys.argv[1:])]
    main()
