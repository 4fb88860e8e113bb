"""Records -> rows: one row per successful run, its columns read as the column registry says. The
only stage that reads record fields (and the registry's mixer facts); every later stage works on
these rows."""

from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.config import mixer_spec, state_knob
from benchmarks.config import searched_config as config_searched
from benchmarks.ess import ess_bound
from benchmarks.report.columns import COLUMNS, RUN_COLUMNS, main_evaluations
from benchmarks.store import design_key, protocol_key

# The headline tolerance ESS: singular values of a split's block above 1% of the largest singular
# value of the channel's whole operator (every split). A direction whose gain is under 1% of the
# operator's strongest is below bf16's relative precision (2^-7 = 0.8%) and moves the output less
# than rounding does where these models are deployed; `matrix_rank`'s machine-precision default
# instead counts directions of gain 1e-7, which every trained operator has in numbers, so softmax
# attention's default ESS is its geometric bound min(i, L - i) whatever it learned.
HEADLINE_TOLERANCE = "operator:0.01"
MACHINE_TOLERANCE = "machine precision"

MAD_TASKS = ("in_context_recall", "noisy_recall", "fuzzy_recall", "selective_copying", "compression", "memorization")
FAMILIES = {"mqar": "MQAR", **{t: "MAD" for t in MAD_TASKS}}


def backbone_of(cfg: dict) -> str:
    """The run's backbone; records from before the field trained MAD's blocks."""
    return cfg.get("model", {}).get("backbone", "mad")


@functools.cache
def state_knob_name(mixer: str) -> str | None:
    """The constructor argument a reference mixer's sweeps vary its state size with (its
    architecture config's `state_sizes`), or None (attention, out-of-tree mixers)."""
    path = Path(__file__).parent.parent / "conf" / "architecture" / f"{mixer}.yaml"
    if not path.exists():
        return None
    knob = state_knob({"architecture": yaml.safe_load(path.read_text()) or {}})
    return knob[0] if knob else None


def declares(mixer: str, attribute: str) -> bool:
    """Whether the registered mixer's class sets a boolean class attribute (`short_conv`, `linear_in_input`);
    False for a name the registry does not know."""
    from architectures import registry

    try:
        return bool(getattr(registry.resolve(mixer), attribute, False))
    except ValueError:
        return False


def own_conv(mixer: str) -> bool:
    """Whether the mixer carries its own short convolution: then `conv_mlp` builds its `mad` model unchanged."""
    return declares(mixer, "short_conv")


def _setting(task: dict) -> str:
    if task["name"] == "mqar":
        return f"L={task['seq_len']}, kv={task['num_kv_pairs']}"
    level = task.get("level")
    return (f"level {level}, " if level is not None else "") + f"L={task['seq_len']}"


def setting_of(record: dict) -> str:
    return _setting({**record["config"]["task"], **record["metrics"]["task"]})


def _ess_at(ess: dict, tolerance: str) -> float:
    if tolerance == MACHINE_TOLERANCE:
        return ess["ess_mean"]
    return ess.get("ess_mean_by_tolerance", {}).get(tolerance, float("nan"))


def run_seconds(r: dict) -> float:
    """A run's own time: a group's runs (successive halving) share one wall_time_s, the group's, so theirs
    is the sum of the parts each recorded (training steps, evaluations, ESS), less what a continuation
    carried over from the state it resumed from (`metrics.continued.seconds_carried`: the run it trains
    further spent those); a lone run's is its wall time."""
    m = r.get("metrics", {})
    own = sum(v for v in (m.get("seconds") or {}).values() if isinstance(v, (int, float)))
    return float(own) - seconds_carried(r) if own and m.get("search") else float(r["wall_time_s"])


def seconds_carried(r: dict) -> float:
    """The seconds a continuation took over from the kept state it resumed from (0 for any other run)."""
    return float((r.get("metrics", {}).get("continued") or {}).get("seconds_carried") or 0.0)


def parted_at(run: dict, parent: dict) -> float:
    """The first evaluation, up to the cap it continued from, at which a continuation's validation loss
    differs from that of the run it trains further (`continues`); NaN where the two curves agree. A
    continuation retrained from its first step (the capped run's state was not kept) under other code
    parts from the capped run after a few hundred steps by float rounding: a new draw of the same
    config, not that run trained further."""
    cap = run["metrics"]["continued"]["cap"]
    main = lambda r: [h for h in main_evaluations(r["metrics"].get("history", [])) if h["step"] <= cap]
    before = {h["step"]: h["val_loss"] for h in main(parent)}
    for h in main(run):
        if h["step"] in before and not math.isclose(h["val_loss"], before[h["step"]], rel_tol=1e-6, abs_tol=1e-9):
            return float(h["step"])
    return float("nan")


def searched_config(record: dict) -> dict:
    """The config of the search a run belongs to: a continuation's own config has the cap it was raised
    to and no rungs (`benchmarks.config.continued_config`), its design and protocol are its search's, so
    a seed-0 row trained past the cap and a seed-1 row of the same design are seeds of one design."""
    budgets = ((record.get("metrics") or {}).get("search") or {}).get("rungs")
    if not (record.get("continues") and budgets):
        return record["config"]
    return config_searched(record["config"], budgets)


@dataclass
class Run:
    """One record, its parts named once for the registry's `read` functions; `parent`: the record of the
    run it trains further, for a continuation."""

    record: dict
    parent: dict | None = None
    earlier_seconds: float = 0.0  # the runs it trains further, each its own time: what its row cost in all

    def __post_init__(self):
        r = self.record
        self.m, self.prov, self.cfg = r["metrics"], r["provenance"], r["config"]
        self.mixer, arch = mixer_spec(self.cfg["architecture"])
        knob = state_knob_name(self.mixer)
        self.task = self.m["task"]
        self.setting = _setting({**self.cfg["task"], **self.task})
        self.level = self.task.get("level", self.cfg["task"].get("level"))
        searched = searched_config(r)
        self.group, self.design, self.protocol = r.get("group", r["key"]), design_key(searched), protocol_key(searched)
        self.backbone = backbone_of(self.cfg)
        self.state = f"{knob}={'default' if arch[knob] is None else arch[knob]}" if knob and knob in arch else ""
        self.state_value = float(arch[knob]) if knob and arch.get(knob) is not None else float("nan")
        self.ess = _ess_at(self.m["ess"], HEADLINE_TOLERANCE)
        self.channels = sum(p["channels"] for p in self.m["ess"].get("per_layer", [])) or float("nan")
        self.bound = ess_bound(self.m["tss"], self.task["seq_len"], tuple(self.m["ess"]["window"]))
        init = self.m.get("ess_at_init")  # records from before it was measured have none
        self.ess_init = _ess_at(init, HEADLINE_TOLERANCE) if init else float("nan")
        early = next((h for h in self.m.get("history", []) if "ess" in h), None)
        self.ess_early = _ess_at(early["ess"], HEADLINE_TOLERANCE) if early else float("nan")
        self.early_step = early["step"] if early else float("nan")
        self.seconds = run_seconds(r) + self.earlier_seconds
        self.parted_at = parted_at(r, self.parent) if self.parent and self.m.get("continued") else float("nan")


def _total_state(run: Run, summed: float) -> float:
    """The model's total ESS as a state bound (`benchmarks.ess.summarize`'s `ess_total_state`, at the
    headline tolerance): where the record has it; else the per-channel sum, a bound only where channels
    keep separate states, so NaN for a mixer whose channels share one (`shared_state`)."""
    total = run.m["ess"].get("ess_total_state_by_tolerance", {}).get(HEADLINE_TOLERANCE)
    if total is not None:
        return float(total)
    return float("nan") if declares(run.mixer, "shared_state") else summed


def _run_row(r: dict, parent: dict | None = None, earlier_seconds: float = 0.0) -> dict:
    run = Run(r, parent, earlier_seconds)
    row = {c.key: c.read(run) for c in COLUMNS if c.read is not None}
    if "ess_total" in row:
        row["ess_total"] = _total_state(run, row["ess_total"])
    return row


def continued(records: list[dict]) -> set[str]:
    """The runs a successful continuation trained further (`continue_to`, its record's `continues`), and
    continuations that another continuation of the same run to a higher cap covers: it trained the same
    first steps from the same state (two sweeps before commit d0a8d11 could train both), so it is that
    run, longer."""
    kids: dict[str, list[dict]] = {}
    for r in records:
        if r.get("status") == "ok" and r.get("continues"):
            kids.setdefault(r["continues"], []).append(r)
    covered = {c["key"] for cs in kids.values() for c in sorted(cs, key=lambda c: c["config"]["train"]["steps"])[:-1]}
    return set(kids) | covered


def run_rows(records: list[dict]) -> pd.DataFrame:
    """One row per successful run (every learning rate of every group); a run trained further past its
    cap is its continuation's row (the same run, longer)."""
    gone = continued(records)
    parents = {r["key"]: r for r in records if r["key"] in gone}
    rows = [
        _run_row(r, parents.get(r.get("continues")), sum(map(run_seconds, _trained_further(r, parents))))
        for r in records
        if r.get("status") == "ok" and r["key"] not in gone
    ]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _trained_further(run: dict, parents: dict[str, dict]) -> list[dict]:
    """The runs a continuation trains further, nearest first (a cap raised twice continues a continuation)."""
    chain = []
    while (parent := parents.get(run.get("continues"))) is not None and parent not in chain:
        chain.append(parent)
        run = parent
    return chain


def ess_by_key(records: list[dict]) -> dict[str, dict]:
    """Each successful run's ESS summary (every tolerance), by record key."""
    return {r["key"]: r["metrics"]["ess"] for r in records if r.get("status") == "ok"}


def history_rows(records: list[dict], keys) -> pd.DataFrame:
    """The evaluations where ESS was recorded, of the runs in `keys`: key, step, headline ESS, val accuracy."""
    keys = set(keys)
    rows = [
        {"key": r["key"], "step": h["step"], "ess": _ess_at(h["ess"], HEADLINE_TOLERANCE), "val accuracy": h["val_accuracy"]}
        for r in records
        if r.get("status") == "ok" and r["key"] in keys
        for h in r["metrics"].get("history", [])
        if "ess" in h
    ]
    return pd.DataFrame(rows, columns=["key", "step", "ess", "val accuracy"])


def cost_rows(records: list[dict]) -> pd.DataFrame:
    """One row per successful MQAR run: backbone, setting, L, kv, wall time and steps."""
    rows = [
        {
            "backbone": backbone_of(r["config"]),
            "setting": setting_of(r),
            "L": r["metrics"]["task"]["seq_len"],
            "kv": r["metrics"]["task"].get("num_kv_pairs", 0),
            "wall": run_seconds(r),
            "steps": r["metrics"]["steps"],
        }  # fmt: skip
        for r in records
        if r.get("status") == "ok" and r["config"]["task"]["name"] == "mqar"
    ]
    return pd.DataFrame(rows, columns=["backbone", "setting", "L", "kv", "wall", "steps"])


def time_rows(records: list[dict]) -> pd.DataFrame:
    """Per run that recorded its time split: mixer, wall time and the seconds of each part."""
    rows = []
    for r in records:
        parts = r.get("metrics", {}).get("seconds") if r.get("status") == "ok" else None
        if parts:
            whole = run_seconds(r) + seconds_carried(r)  # the whole run's, as its parts are
            rows.append({"mixer": mixer_spec(r["config"]["architecture"])[0], "wall": whole, **parts})
    return pd.DataFrame(rows)


def without_backbone(cfg: dict) -> str:
    """The run's protocol but its backbone: what the backbone ablation's models share."""
    return protocol_key({**cfg, "model": {k: v for k, v in cfg.get("model", {}).items() if k != "backbone"}})


def mqar_by_protocol(records: list[dict], setting: str) -> list[list[dict]]:
    """The successful MQAR records of one setting, grouped by their protocol but the backbone; each
    group's records with the number of backbones they cover (`backbone_of`)."""
    here = [r for r in records if r.get("status") == "ok" and r["config"]["task"]["name"] == "mqar" and setting_of(r) == setting]
    by_protocol: dict[str, list] = {}
    for r in here:
        by_protocol.setdefault(without_backbone(r["config"]), []).append(r)
    return list(by_protocol.values())


def measured(records: list[dict]) -> list[dict]:
    """The records that carry metrics."""
    return [r for r in records if "metrics" in r]


def by_status(records: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """The records the leaderboard reads (measured or failed), the successful ones and the others."""
    kept = [r for r in records if "metrics" in r or r.get("status") == "failed"]
    return kept, [r for r in kept if r.get("status") == "ok"], [r for r in kept if r.get("status") != "ok"]


def newest(ok: list[dict]) -> tuple[str, list[str]]:
    """When the newest run started, and the commits of the runs started on its day."""
    last = max((r.get("started", "") for r in ok), default="")
    return last, sorted({r["provenance"]["commit"][:10] for r in ok if r.get("started", "") >= last[:10]})


def failed_runs(failed: list[dict]) -> list[dict]:
    """The failed runs the page lists: key, mixer and error."""
    return [{"key": r["key"], "mixer": r["config"]["architecture"].get("name", "?"), "error": r.get("error", "")} for r in failed]


def provenance_blobs(records: list[dict]) -> list[dict]:
    """Every record's config and provenance as the page's JSON blobs."""
    return [
        {
            "key": r["key"],
            "mixer": r["config"]["architecture"].get("name", "?"),
            "blob": json.dumps({"config": r["config"], "provenance": r.get("provenance")}, indent=1),
        }
        for r in records
    ]


def _searched_rates(r: dict) -> set | None:
    """The rates a successive-halving search tried for the record's group (`metrics.search`), or None."""
    search = (r.get("metrics") or {}).get("search") or r.get("search")
    return set(search["rates"]) if search else None


def incomplete_groups(records: list[dict]) -> list[str]:
    """Groups whose learning-rate grid a sweep has not finished: a rate that another group of the same
    protocol (task setting, model, data and budget) has tried, ok or failed, this one has not; for a
    group searched by successive halving, a rate its own search tried (its records are written
    together, so that happens only to a group cut short). Their best run is not yet the best of the
    grid, so the leaderboard holds them back until it is."""
    tried: dict[str, tuple[str, set, set | None]] = {}
    for r in records:
        if r.get("continues"):  # a run trained further after its group's search ended
            continue
        cfg = r["config"]
        group = tried.setdefault(r.get("group", r["key"]), (protocol_key(cfg), set(), _searched_rates(r)))
        group[1].add(cfg["train"]["lr"])
    grids: dict[str, set] = {}
    for protocol, rates, searched in tried.values():
        if searched is None:  # a searched group's edge extensions are its own, not its protocol's grid
            grids.setdefault(protocol, set()).update(rates)
    return sorted(
        g for g, (protocol, rates, searched) in tried.items()
        if (rates < searched if searched is not None else rates < grids[protocol])
    )  # fmt: skip


def learning_curves(records: list[dict], keys) -> pd.DataFrame:
    """Every validation evaluation of the runs in `keys`: key, sequences seen, val accuracy (records
    before `sequences` was logged: steps x batch size)."""
    keys = set(keys)
    rows = [
        {"key": r["key"], "sequences": h.get("sequences", h["step"] * r["config"]["train"].get("batch_size", float("nan"))),
         "val accuracy": h["val_accuracy"]}
        for r in records
        if r.get("status") == "ok" and r["key"] in keys
        for h in r["metrics"].get("history", [])
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["key", "sequences", "val accuracy"])


def budgets(records: list[dict]) -> pd.DataFrame:
    """Per group, the protocol's facts the findings cite: its step budget (its search's cap, not a
    continuation's) and how many rates it tried."""
    out: dict[str, dict] = {}
    for r in records:
        if r.get("continues"):
            continue
        g = out.setdefault(r.get("group", r["key"]), {"steps": r["config"]["train"]["steps"], "rates": set()})
        g["rates"].add(r["config"]["train"]["lr"])
    return pd.DataFrame([{"group": k, "budget": v["steps"], "rates": len(v["rates"])} for k, v in out.items()],
                        columns=["group", "budget", "rates"])  # fmt: skip


def plans(store_root: Path) -> dict[str, list[str]]:
    """The run keys of each sweep that wrote a plan into the store (`benchmarks.bench`), by preset."""
    out = {}
    for plan in sorted((Path(store_root) / "plans").glob("*.json")):
        try:
            keys = json.loads(plan.read_text())["keys"]
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise TypeError("keys is not a list of strings")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:  # cut short, or not a plan
            print(f"warning: {plan}: not a readable plan ({type(e).__name__}: {e}); it is left out", file=sys.stderr)
            continue
        out[plan.stem] = keys
    return out


# the preset that adds state sizes to a few mixers for the within-family test: its own runs stay out of
# the tables that rank mixers by their best state size, where two extra sizes would be two extra draws
FAMILY_PLAN = "state_family"


def family_only_keys(planned: dict[str, list[str]]) -> set[str]:
    """The runs planned by FAMILY_PLAN alone (its groups shared with another preset are not among them)."""
    others = {k for name, keys in planned.items() if name != FAMILY_PLAN for k in keys}
    return set(planned.get(FAMILY_PLAN, [])) - others


def family_only_groups(planned: dict[str, list[str]], records: list[dict]) -> set[str]:
    """The groups of those runs, so that a rate the search added past the planned grid goes with them."""
    keys = family_only_keys(planned)
    return {r.get("group") for r in records if r["key"] in keys}


def coverage(planned: dict[str, list[str]], records: list[dict]) -> list[dict]:
    """Planned and finished runs per sweep that wrote a plan into the store (`plans`)."""

    done = {r["key"]: r for r in records}
    out = []
    for name, keys in planned.items():
        ran = [done[k] for k in keys if k in done]
        out.append(
            {
                "sweep": name,
                "planned": len(keys),
                "ok": sum(r.get("status") == "ok" for r in ran),
                "failed": sum(r.get("status") == "failed" for r in ran),
                # each run's own time summed (two workers run two at a time; a group's runs share one wall time)
                "run_hours": sum(run_seconds(r) for r in ran if "wall_time_s" in r) / 3600,
            }
        )
    return out


# what names one model of the leaderboard, its training protocol aside
MODEL_KEYS = ["task", "mixer", "state", "setting", "backbone", "seed"]


def mixed_protocols(runs: pd.DataFrame) -> list[str]:
    """The models (MODEL_KEYS) a store holds under more than one protocol (model, data or training
    budget: `protocol_key`), each described once. Every table would read both as the leaderboard's, so
    an older protocol's records belong in a store of their own (as `results/budget_2000`)."""
    if runs.empty:
        return []
    counts = runs.groupby(MODEL_KEYS, dropna=False)["protocol"].nunique()
    return [
        f"{mixer}{' ' + state if state else ''} {task} {setting} seed {seed} ({n} protocols)"
        for (task, mixer, state, setting, _backbone, seed), n in counts[counts > 1].items()
    ]


def searched_groups(records: list[dict]) -> set[str]:
    """The groups whose learning rate was searched by successive halving (the converged protocol)."""
    return {r.get("group", r["key"]) for r in records if r.get("status") == "ok" and r["metrics"].get("search")}
