"""Tables -> sentences. Every number in a sentence comes from a table or a statistic computed from
the rows, every threshold from `stats`, and every protocol fact (budget, rates) from the records."""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.record import PRUNED_IN_A_TIE
from benchmarks.report.rows import FAMILIES, declares, own_conv
from benchmarks.report.stats import (
    ACCURACY_SHIFT,
    ATTENTION_FLOOR,
    BELOW_BASELINE,
    BELOW_BASELINE_Z,
    CONVERGED_SHARE,
    INSIDE_GRID_SHARE,
    INTERVAL_METHOD,
    LEARNED_MARGIN,
    MEDIAN_SEEDS,
    MQAR_CPU_HOURS_AIM,
    SOLVED,
    _demand_alone,
    best_per_setting,
    pooled_advantage,
    stratified_advantage,
)  # fmt: skip
from benchmarks.report.tables import BACKBONE_ORDER, COST_TOTAL

BACKBONE_LABELS = {
    "zoology": "Zoology's model",
    "conv_mlp": "MAD's blocks with a BaseConv ahead of the mixer",
    "mad": "MAD's mixer + MLP blocks",
}


def ladder_lines(table: pd.DataFrame, solved: float = SOLVED, margin: float = LEARNED_MARGIN) -> list[str]:
    """One sentence per mixer of `tables.ladder`: the easiest setting where its best falls below
    `solved` and the hardest where it is still above the baseline + `margin`."""
    if table.empty:
        return []
    rows = table.set_index("mixer")
    base = rows.loc["no-recall baseline"]
    lines = []
    for mixer, row in rows.drop(index="no-recall baseline").iterrows():
        ran = row.dropna().map(_number)  # a median over seeds is shown with its range
        below = [s for s in ran.index if ran[s] < solved]
        above = [s for s in ran.index if ran[s] > base[s] + margin]
        first = (
            f"first below {solved} at {below[0]} ({ran[below[0]]:.3f})"
            if below
            else f"at or above {solved} on all {len(ran)} settings run"
        )
        last = (
            f"above the baseline + {margin} up to {above[-1]} ({ran[above[-1]]:.3f})"
            if above
            else f"never above the baseline + {margin}"
        )
        lines.append(f"{mixer}: {first}; {last}.")
    return lines


def _number(cell) -> float:
    """A ladder cell's accuracy: the number, or a median's leading number ("0.808 (0.244-0.942)")."""
    return float(cell.split()[0]) if isinstance(cell, str) else float(cell)


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _settings_phrase(k: int) -> str:
    return "its one setting" if k == 1 else f"each of its {k} settings"


def _interval(low: float, high: float, name: str) -> str:
    return "too few rows for an interval" if math.isnan(low) else f"{name} {_fmt(low)} to {_fmt(high)}"


def _call(res: dict) -> str:
    """What a signed comparison says (`stats.assess`'s result): it holds only when its clustered interval
    lies above zero and no single mixer's removal flips its sign."""
    low, high, flips = res["low"], res["high"], res.get("flips", [])
    if math.isnan(low):
        return "is not settled: too few mixers for a clustered interval"
    if flips:
        return f"is not settled: without {', '.join(map(str, flips))} its sign flips"
    if low > 0:
        return "holds"
    if high < 0:
        return "does not hold: TSS tracks accuracy better"
    return "is not settled by these rows (the interval includes zero)"


def _loo(res: dict) -> str:
    """Leave-one-mixer-out beside a verdict: the range of the statistic with each mixer left out."""
    values = [v for v in res.get("loo", {}).values() if not math.isnan(v)]
    if not values:
        return ""
    return f"; leaving out one mixer at a time it runs from {_fmt(min(values))} to {_fmt(max(values))}"


def verdict(corr: pd.DataFrame, within: pd.DataFrame, use: pd.DataFrame, best: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences, one per task family: does accuracy follow ESS more closely than TSS? First
    within each setting (one length and demand: nothing shared between the axes), with a clustered bootstrap
    interval of the difference in Spearman (signed: the claim is that more ESS goes with higher
    accuracy); then pooled over settings as the ESS paper pools them
    (ESS/demand and TSS/demand, with its clustered interval), next to how much of that the demand alone
    explains; then within each mixer, and which rows saturate or collapse."""
    out = []
    for task, g in corr.groupby("task"):
        allr = g[g["rows"] == "all"].iloc[0]
        learned = g[g["rows"] == "learned"].iloc[0]
        e, t = allr["Spearman ESS/demand"], allr["Spearman TSS/demand"]
        part = best[best["task"] == task] if best is not None else None
        strat = stratified_advantage(part) if part is not None else {"settings": 0}
        if (math.isnan(e) or math.isnan(t)) and not strat["settings"]:
            out.append(f"{task}: too few rows with spread for a coefficient (n = {allr['n']}).")
            continue
        text = f"{task}:"
        if strat["settings"]:
            text += (
                f" within {_settings_phrase(strat['settings'])} (one length and memory demand; {strat['n']} best rows), "
                f"accuracy's Spearman correlation with ESS averages {_fmt(strat['ess'])}"
                + (" (negative: rows that use more state score lower)" if strat["ess"] < 0 else "")
                + f" and with TSS {_fmt(strat['tss'])}; "
                f"ESS's advantage (its coefficient minus TSS's) is {_fmt(strat['diff'])} "
                f"({_interval(strat['low'], strat['high'], '95% clustered interval')}{_loo(strat)}), "
                "so the claim that ESS tracks accuracy "
                f"better {_call(strat)}."
            )
            if "ess_total" in part and part["ess_total"].notna().all():  # memory spread over channels counts too
                total = stratified_advantage(part.assign(ess=part["ess_total"]))
                text += (
                    f" With the model's total ESS instead of its per-channel mean (summed over channels that keep "
                    f"separate states; the rank over all channels where they share one), the correlation averages "
                    f"{_fmt(total['ess'])} and the advantage is {_fmt(total['diff'])} "
                    f"({_interval(total['low'], total['high'], 'interval')}{_loo(total)}: {_call(total).split(':')[0]})."
                )
        pooled = part is None or part["setting"].nunique() > 1  # one setting: pooling adds nothing
        if pooled and not (math.isnan(e) or math.isnan(t)):
            res = pooled_advantage(part) if part is not None else {"low": float("nan"), "high": float("nan")}
            lo, hi = res["low"], res["high"]
            demand_alone = _demand_alone(part) if part is not None else float("nan")
            text += (
                f" Pooled over settings as the ESS paper pools them (n = {allr['n']}): ESS/demand {_fmt(e)}, TSS/demand "
                f"{_fmt(t)}, difference {_fmt(e - t)} ({_interval(lo, hi, 'clustered interval')}{_loo(res)})"
            )
            if not math.isnan(demand_alone):  # the demand varies over the settings pooled
                text += (
                    f"; but there 1/demand scales both axes, and 1/demand alone correlates {_fmt(demand_alone)} with "
                    "accuracy (a row at the no-recall baseline scores it), which is why the within-setting comparison "
                    "is the test"
                )
            above = g[g["rows"] == "all, accuracy above baseline"].iloc[0]
            text += (
                f". With accuracy above the baseline instead: {_fmt(above['Spearman ESS/demand'])} against "
                f"{_fmt(above['Spearman TSS/demand'])}; on the "
                f"{learned['n']} rows that learned: {_fmt(learned['Spearman ESS/demand'])} against "
                f"{_fmt(learned['Spearman TSS/demand'])}."
            )
        text += _within_and_use(task, within, use, best)
        out.append(text)
    return out


def _within_and_use(task: str, within: pd.DataFrame, use: pd.DataFrame, best: pd.DataFrame | None) -> str:
    """The verdict's last sentences for a task: within each mixer, then which rows saturate or collapse."""
    text = ""
    w = within[(within["task"] == task)].dropna(subset=["Spearman ESS/demand", "Spearman TSS/demand"])
    if not w.empty:
        better = w[w["Spearman ESS/demand"] > w["Spearman TSS/demand"]]["mixer"].tolist()
        worse = sorted(set(w["mixer"]) - set(better))
        text += (
            f" Within a mixer, across its state sizes and settings (accuracy above baseline), ESS tracks better for "
            f"{len(better)} of {len(w)} mixers ({', '.join(better) or 'none'}); TSS as well or better for "
            f"{', '.join(worse) or 'none'}."
        )
    u = use[use["task"] == task]
    if best is not None and "same_as" in best:  # a pair that is one model counts once
        u = u[best["same_as"].reindex(u.index).fillna("") == ""]
    for kind in ("saturated", "collapsed"):
        hit = u[u["state use"] == kind]
        if not hit.empty:
            rows = f"{len(hit)} row" + ("s" if len(hit) > 1 else "")
            text += f" {kind.capitalize()}: " + ", ".join(sorted(set(hit["mixer"]))) + f" ({rows})."
            solved = hit[hit["accuracy"] >= SOLVED]
            if kind == "collapsed" and not solved.empty:  # the paper reads collapse as failure to use the state
                n = len(solved)
                text += (
                    f" Of these rows, {n} solve{'s' if n == 1 else ''} the task (accuracy >= {SOLVED}) with a "
                    f"per-channel ESS below its demand ({', '.join(sorted(set(solved['mixer'])))})"
                )
                total = best.loc[solved.index, "ess_total"] if best is not None and "ess_total" in best else None
                if total is not None and total.notna().all():  # the memory is there, spread over channels
                    over = int((total >= solved["memory_demand"]).sum())
                    text += (
                        f"; their ESS summed over channels ({total.min():,.0f} to {total.max():,.0f}) reaches the "
                        f"demand in {over} of the {n}" + (": the memory is spread over channels" if over == n else "")
                    )
                text += "."
    return text


def short_verdict(best: pd.DataFrame) -> list[str]:
    """At most three sentences: how many mixers learn each family, and, per family, ESS's advantage over
    TSS within settings (the verdict's test) with its interval and what it says."""
    if best.empty:
        return []
    out = []
    family = best["task"].map(FAMILIES).fillna(best["task"])
    learned = best[best["learned"] == "yes"].groupby(family)["mixer"].nunique()
    run = best.groupby(family)["mixer"].nunique()
    out.append(
        "Mixers that learn (above the no-recall baseline on at least one setting): "
        + "; ".join(
            f"{fam} {int(learned.get(fam, 0))} of the {int(run[fam])} run"
            for fam in sorted(run.index, key=lambda f: (f != "MQAR", f))
        )
        + "."
    )
    parts = []
    for task, g in best.groupby("task"):
        strat = stratified_advantage(g)
        if strat["settings"]:
            parts.append(
                f"{task} {_fmt(strat['diff'])} ({_fmt(strat['low'])} to {_fmt(strat['high'])}: "
                f"{_call(strat).split(':')[0].split(' (')[0]})"
            )
    out += duplicate_lines(best)
    if parts:
        out.append(
            "Does accuracy follow ESS more closely than TSS within a setting (Spearman's coefficient with ESS minus with TSS, "
            "95% clustered interval)? " + "; ".join(parts) + ". " + INTERVAL_METHOD
        )
    return out


def duplicate_lines(best: pd.DataFrame) -> list[str]:
    """One sentence per task naming the rows that are another mixer's model at their setting (`same_as`):
    they stay in the tables under their own name, and count once, as their twin, in every statistic."""
    if "same_as" not in best:
        return []
    out = []
    for task, g in best[best["same_as"].fillna("") != ""].groupby("task"):
        cells = "; ".join(
            f"{r.mixer} ({r.state}) at {r.setting} is {r.same_as}" for r in g.sort_values(["seq_len", "setting"]).itertuples()
        )
        out.append(
            f"{task}: the same model under two names, a window at least as long as the sequence seeing every past token: "
            f"{cells}. Each such pair counts once in every statistic on this page."
        )
    return out


def seed_summary(spread: pd.DataFrame, verdicts: pd.DataFrame, wide: float = ACCURACY_SHIFT) -> list[str]:
    """Sentences on what the seed replicates say: the designs whose best accuracy moves by more than
    `wide` with the seed (their single-seed rows elsewhere are one draw), and whether the
    within-setting comparison keeps its sign at every seed."""
    out = []
    moved = spread[spread["accuracy range"] > wide]
    for _, r in moved.iterrows():
        state = f" ({r['state']})" if r["state"] else ""
        seeds = r["seeds"].split(", ")
        shown = (f"the run of its median seed (of {len(seeds)})" if len(seeds) >= MEDIAN_SEEDS
                 else f"seed {seeds[0]}, one draw of that spread")  # fmt: skip
        out.append(
            f"{r['task']} {r['setting']}: {r['mixer']}{state} scores {r['accuracy']} at seeds {r['seeds']} "
            f"(a range of {r['accuracy range']:.2f}): its rows elsewhere on this page are {shown}."
        )
    if not spread.empty and moved.empty:
        out.append(f"No replicated design's best accuracy moves by more than {wide} with the seed.")
    for (task, setting), g in verdicts.groupby(["task", "setting"], sort=False):
        gap = g["Spearman ESS"] - g["Spearman TSS"]
        agree = (gap > 0).all() or (gap < 0).all()
        out.append(
            f"{task} {setting}: ESS's Spearman coefficient minus TSS's is "
            + " / ".join(f"{x:.2f}" for x in gap)
            + f" at seeds {', '.join(str(x) for x in g['seed'])}: "
            + ("the same sign at every seed." if agree else "the sign changes with the seed.")
        )
    return out


def ablation_findings(long: pd.DataFrame) -> list[str]:
    """One sentence per finding of `backbone_ablation`'s rows: which mixers learn only with the
    convolution, which in every backbone, which in none, which lose with Zoology's model."""
    if long.empty:
        return []
    out, names = [], pd.Series(sorted(long["mixer"].unique()))
    for setting, g in long.groupby("setting", sort=False):
        acc = {b: g[g["backbone"] == b].set_index("mixer")["accuracy"].reindex(names).reset_index(drop=True)
               for b in BACKBONE_ORDER if (g["backbone"] == b).any()}  # fmt: skip
        if "zoology" not in acc or "mad" not in acc:
            continue
        base = float(g["no_recall"].iloc[0])
        have = acc["zoology"].notna() & acc["mad"].notna()  # a mixer not yet run in both is left out
        learned = {b: (a > base + LEARNED_MARGIN) & have for b, a in acc.items()}
        conv = names[learned["zoology"] & ~learned["mad"] & have].tolist()
        every = names[learned["zoology"] & learned["mad"]].tolist()
        middle = learned.get("conv_mlp", learned["mad"])
        none = names[~learned["zoology"] & ~learned["mad"] & ~middle & have].tolist()
        loses = names[((acc["mad"] - acc["zoology"]) > ACCURACY_SHIFT) & have].tolist()
        where = "MQAR " + _where(setting)
        out.append(
            f"{where}: {len(conv)} of {int(have.sum())} mixers learn "
            f"(accuracy above the no-recall baseline + {LEARNED_MARGIN}) in "
            f"Zoology's model but not in MAD's mixer + MLP blocks: {', '.join(conv) or 'none'}; in both: "
            f"{', '.join(every) or 'none'}; in no backbone: {', '.join(none) or 'none'}."
        )
        if loses:
            out.append(f"{where}: worse in Zoology's model by more than {ACCURACY_SHIFT}: " + _why_worse(loses) + ".")
        if "conv_mlp" in acc:
            out += _conv_mlp_findings(where, names, acc, learned)
    return out


def _where(setting: str) -> str:
    return setting.replace("L=", "L ").replace("kv=", "kv ")


def _why_worse(loses: list[str]) -> str:
    lacks_mlp = [m for m in loses if own_conv(m)]
    one_layer = [m for m in loses if not own_conv(m)]
    why = []
    if one_layer:
        why.append(f"{', '.join(one_layer)} (one mixer layer there, after the BaseConv; two in MAD's)")
    if lacks_mlp:
        why.append(f"{', '.join(lacks_mlp)} (their own convolution, so the same two mixer layers; only the MLP is missing)")
    return "; ".join(why)


def _conv_mlp_findings(where: str, names: pd.Series, acc: dict, learned: dict) -> list[str]:
    out = []
    mid = names[learned["conv_mlp"] & ~learned["mad"] & acc["conv_mlp"].notna()].tolist()
    out.append(
        f"{where}: the BaseConv alone (MLP kept) makes {len(mid)} learn that do not without it: {', '.join(mid) or 'none'}."
    )
    ahead = names[((acc["zoology"] - acc["conv_mlp"]) > ACCURACY_SHIFT) & acc["conv_mlp"].notna() & ~names.map(own_conv)]
    if len(ahead):
        out.append(
            f"{where}: with the BaseConv in both models, Zoology's is ahead by more than {ACCURACY_SHIFT} for "
            f"{', '.join(ahead)}: "
            "what it leaves out (the MLP blocks, the second mixer layer) slows them within this budget."
        )
    return out


def never_learned(df: pd.DataFrame, ablation: pd.DataFrame | None = None) -> list[str]:
    """Per task, the mixers that came within LEARNED_MARGIN of the no-recall baseline on every one of its
    settings, each with its largest gain, and why where the evidence says: a mixer linear in its input (as
    the LRU: a fixed filter, the same for every input, cannot route a value by the content of its key), a
    gated convolution (Zoology's finding on its width), and, on MQAR, the backbone ablation's other models
    (`backbone_ablation`'s rows: where the same mixer does learn, or that none does)."""
    out = []
    for task, g in df.groupby("task"):
        for mixer, m in g.groupby("mixer"):
            gap = (m["accuracy"] - m["no_recall"]).max()
            if gap > LEARNED_MARGIN:
                continue
            fixed = declares(mixer, "linear_in_input")
            why = ""
            if fixed and task == "mqar":
                why = (
                    " It is linear time-invariant (its operator is the same for every input, which conformance checks against "
                    "the Jacobian of its forward): a fixed filter cannot route a value by the content of its key, so it is "
                    "expected to stay at the baseline."
                )
            elif task == "mqar" and declares(mixer, "gated_convolution"):
                why = (
                    " It is a gated convolution (a long filter that is the same for every input, between elementwise gates): "
                    "Zoology (Arora et al. 2023, arXiv 2312.04927) finds that such a model needs a width growing with the "
                    "sequence length to solve MQAR, where attention does not; the width was not varied here."
                )
            if not fixed and task == "mqar" and ablation is not None and not ablation.empty:
                why += _elsewhere(mixer, ablation)
            if not fixed and "stopped" in m and (m["stopped"] == "budget").any():
                why += (
                    f" {int((m['stopped'] == 'budget').sum())} of its {len(m)} best runs ended at the step budget, not on a "
                    "plateau: still improving, so a longer budget may change this."
                )
            out.append(
                f"{task}: {mixer} stayed within {LEARNED_MARGIN} of the no-recall baseline on "
                f"{'both' if m['setting'].nunique() == 2 else 'all ' + str(m['setting'].nunique())} settings "
                f"(best accuracy - baseline at most {gap:+.3f}).{why}"
            )
    return out


def below_baseline_lines(df: pd.DataFrame) -> list[str]:
    """Per task, the best rows below their no-recall baseline (`stats.below_baseline`), each with its
    accuracy and baseline: a reader should see where a model does worse than guessing among the values
    its context holds, not find it averaged into "not learned"."""
    out = []
    for task, g in df.groupby("task"):
        low = g[g["learned"] == BELOW_BASELINE].sort_values(["seq_len", "memory_demand", "mixer", "state"])
        if low.empty:
            continue
        cells = "; ".join(
            f"{_named(r)} {r.accuracy:.3f} (baseline {r.no_recall:.3f})" for r in low.itertuples()
        )
        out.append(
            f"{task}: below the no-recall baseline by more than {BELOW_BASELINE_Z} standard errors over the test "
            f"sequences: {cells}. Each does worse than a guess among the values its context holds: it cannot see them "
            "(a window shorter than the context) or has not learned to pick among them."
        )
    return out


_COUNTS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _elsewhere(mixer: str, ablation: pd.DataFrame) -> str:
    """What the backbone ablation's models other than Zoology's say of a mixer that did not learn in it."""
    others = ablation[(ablation["mixer"] == mixer) & (ablation["backbone"] != "zoology") & ablation["accuracy"].notna()]
    others = others[~others["repeated"] & ~((others["backbone"] == "conv_mlp") & own_conv(mixer))]  # a repeated mad run
    if others.empty:
        return ""
    learns = others[others["accuracy"] > others["no_recall"] + LEARNED_MARGIN]
    if learns.empty:
        top = others.sort_values(["accuracy", "setting", "backbone"]).iloc[-1]
        return (
            " No other model in the backbone ablation makes it learn either "
            f"(its best there: {top['accuracy']:.3f} in {BACKBONE_LABELS[top['backbone']]})."
        )
    cells = "; ".join(
        f"{r.accuracy:.3f} at {_where(r.setting)} in {BACKBONE_LABELS[r.backbone]} (baseline {r.no_recall:.3g})"
        for r in learns.itertuples()
    )
    protocol = ""
    if "budget" in learns and learns["budget"].notna().all():
        steps, rates = int(learns["budget"].max()), int(learns["rates"].max())
        protocol = f" ({steps:,} steps, {_COUNTS.get(rates, str(rates))} rate{'s' if rates != 1 else ''})"
    return (
        f" The same mixer learns in another model: {cells}. So within this protocol's budget{protocol} "
        "it needs what that model adds, not more state."
    )


def backbone_change(new: pd.DataFrame, old: pd.DataFrame, margin: float = LEARNED_MARGIN) -> list[str]:
    """What the MQAR leaderboard says in Zoology's model (`new`: the published best rows) against what it
    said in MAD's mixer + MLP blocks (`old`: the best rows of the records moved to mlp_backbone/), on the
    settings both have: which mixers learn (best accuracy above the baseline + `margin` on some setting),
    the accuracy changes larger than ACCURACY_SHIFT, and the verdict's within-setting test on each."""
    new, old = new[new["task"] == "mqar"], old[old["task"] == "mqar"]
    count = {name: d.groupby("setting")["mixer"].nunique() for name, d in (("new", new), ("old", old))}
    full = max(count["new"].max(), count["old"].max()) if len(count["new"]) and len(count["old"]) else 0
    shared = [  # a setting that one sweep has covered only in part would compare different mixers
        s for s in new.sort_values(["seq_len", "memory_demand"])["setting"].drop_duplicates()
        if count["new"].get(s, 0) == full and count["old"].get(s, 0) == full
    ]  # fmt: skip
    if new.empty or old.empty or not shared:
        return []
    new, old = new[new["setting"].isin(shared)], old[old["setting"].isin(shared)]
    best = {name: best_per_setting(d) for name, d in (("zoology", new), ("mad", old))}

    def learners(d: pd.DataFrame) -> list[str]:
        return sorted(d[d["accuracy"] > d["no_recall"] + margin]["mixer"].unique())

    mixers = sorted(set(best["zoology"]["mixer"]) & set(best["mad"]["mixer"]))
    now, then = learners(best["zoology"]), learners(best["mad"])
    out = [
        f"On the MQAR settings both models were run at ({'; '.join(shared)}), {len(now)} of {len(mixers)} mixers learn "
        f"(best accuracy above the no-recall baseline + {margin}) in Zoology's model: {', '.join(now) or 'none'}; "
        f"{len(then)} did in MAD's mixer + MLP blocks: {', '.join(then) or 'none'}."
    ]
    a = best["zoology"].set_index(["mixer", "setting"])["accuracy"]
    b = best["mad"].set_index(["mixer", "setting"])["accuracy"]
    both = a.index.intersection(b.index)
    delta = a[both] - b[both]
    for sign, word in ((1, "Higher"), (-1, "Lower")):
        moved = delta[sign * delta > ACCURACY_SHIFT]
        if moved.empty:
            continue
        per_mixer = []
        for mixer in moved.groupby(level="mixer").mean().mul(sign).sort_values(ascending=False).index:
            cells = [f"{s.replace('L=', 'L ').replace('kv=', 'kv ')} {b[(mixer, s)]:.3f} -> {a[(mixer, s)]:.3f}"
                     for s in shared if (mixer, s) in moved.index]  # fmt: skip
            per_mixer.append(f"{mixer} ({'; '.join(cells)})")
        out.append(
            f"{word} in Zoology's model by more than {ACCURACY_SHIFT} (MAD's blocks -> Zoology's model): "
            + ", ".join(per_mixer)
            + "."
        )
    parts = []
    for rows, label in ((new, "in Zoology's model"), (old, "in MAD's blocks")):
        strat = stratified_advantage(rows)  # every best row, each state size its own, as the verdict tests
        if strat["settings"]:
            parts.append(f"{_fmt(strat['diff'])} ({_fmt(strat['low'])} to {_fmt(strat['high'])}{_loo(strat)}) {label}")
    if parts:
        out.append("ESS's advantage over TSS within these settings (the verdict's test, 95% interval): " + "; ".join(parts) + ".")
    return out


def ess_timing_lines(timing: pd.DataFrame) -> list[str]:
    """Predictive or descriptive, said plainly per task (`tables.ess_timing`): which ESS carries the claim
    that ESS tracks accuracy, the trained model's or one measured before the model learned."""
    lines = []
    for task, t in timing.groupby("task", sort=False):
        by = t.set_index("measured")
        cells = []
        for name, row in by.iterrows():
            at = "" if math.isnan(row["step"]) or not row["step"] else f" (step {row['step']:,.0f})"
            cells.append(f"{name}{at} {_fmt(row['Spearman within settings'])} [{_fmt(row['low'])}, {_fmt(row['high'])}]")
        holds = {name for name, row in by.iterrows() if row["holds"] == "yes"}
        early = "at initialization" in holds or "early" in holds
        if early:
            claim = ("ESS measured before the model learned already orders accuracy within settings: on these rows ESS "
                     "predicts, it does not only describe")  # fmt: skip
        elif "trained" in holds:
            claim = ("only the trained model's ESS orders accuracy: ESS describes what a model learned, it does not predict "
                     "it from the start")  # fmt: skip
        else:
            claim = "no ESS here orders accuracy with an interval above zero: neither claim is supported by these rows"
        n, mixers = int(t["n"].iloc[0]), int(t["mixers"].iloc[0])
        lines.append(f"{task} ({n} best rows, {mixers} mixers): Spearman of accuracy with ESS within settings, "
                     f"{'; '.join(cells)}. So {claim}.")  # fmt: skip
    return lines


def family_lines(family: pd.DataFrame) -> list[str]:
    """The within-family test in sentences (`tables.state_family`): per family, does accuracy follow
    ESS/demand more closely than TSS/demand, and what it cost."""
    lines = []
    for task, t in family.groupby("task", sort=False):
        for _, row in t.iterrows():
            ess, tss = row["Spearman ESS/demand"], row["Spearman TSS/demand"]
            closer = "ESS/demand" if ess > tss else "TSS/demand" if tss > ess else "neither"
            # a family's rows come from a few settings and sizes: too few clusters for an interval that
            # respects them (stats.assess), so the comparison is stated as the point estimate it is
            lines.append(
                f"{task}, {row['family']} (TSS {row['sizes (TSS)']}; {row['settings']} settings, {row['n']} rows): Spearman "
                f"with ESS/demand {_fmt(ess)}, with TSS/demand {_fmt(tss)} (Pearson {_fmt(row['Pearson ESS/demand'])} and "
                f"{_fmt(row['Pearson TSS/demand'])}): {closer} ranks accuracy better, by {abs(ess - tss):.2f} "
                f"(a point estimate, no interval); {row['CPU hours']:.1f} CPU hours of training."
            )
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def convergence_lines(table: pd.DataFrame) -> list[str]:
    """What the converged sweep owes (`tables.convergence`), against its targets, said plainly."""
    lines = []
    for row in table.itertuples(index=False):
        n = row.groups
        ended, inside, floor = row[2], row[3], row[4]
        attention = (
            ""
            if math.isnan(floor)
            else (
                f"; attention's lowest best accuracy is {floor:.3f} (target {ATTENTION_FLOOR}: {_met(floor >= ATTENTION_FLOOR)})"
            )
        )
        lines.append(
            f"{row.task}, the {n} groups trained to convergence so far: {ended} best rows ({ended / n:.0%}) ended solved or "
            f"on a plateau, or were pruned beside a run that did (target {CONVERGED_SHARE:.0%}: "
            f"{_met(ended >= CONVERGED_SHARE * n)}); in {inside} ({inside / n:.0%}) "
            f"the chosen rate lies inside the rates tried or the task was solved (target {INSIDE_GRID_SHARE:.0%}: "
            f"{_met(inside >= INSIDE_GRID_SHARE * n)}){attention}."
        )
    return lines


def cost_lines(cost: pd.DataFrame, by: str = "mixer") -> list[str]:
    """MQAR's CPU hours under the converged protocol so far (`tables.protocol_cost`, grouped `by`) against
    the aim for the whole published MQAR sweep: a reader sees what converging costs before the sweep ends."""
    lines = []
    for row in cost[(cost["task"] == "mqar") & (cost[by] == COST_TOTAL)].to_dict("records"):
        hours, groups = row["CPU hours"], row["groups"]
        verdict = "exceeded already" if hours > MQAR_CPU_HOURS_AIM else "within it so far"
        lines.append(
            f"mqar: the {groups} groups trained under the converged protocol so far (the within-family test's extra "
            f"sizes and the seeds included) took {hours:.1f} CPU hours ({hours / groups:.2f} a group); the aim for the "
            f"whole published MQAR sweep (both lengths, the ladder and the seeds) is {MQAR_CPU_HOURS_AIM}: {verdict}."
        )
    return lines


def cap_lines(best: pd.DataFrame) -> list[str]:
    """The best rows that reached the step cap (`best`: the groups trained to convergence), per task:
    still improving (capped) or flat (budget), each with its accuracy (and its steps where it was
    trained past its search's cap), so that a reader sees what the cap decides and how far those rows
    were from solving."""
    lines = []
    for task, g in best[best["ended"].isin(["capped", "budget"])].groupby("task"):
        g = g.sort_values("accuracy", ascending=False)
        cap = g.loc[g["continued"].fillna("") == "", "steps"]
        cells = [_named(r) + f" {r.accuracy:.3f} ({r.ended}" + _further(r) + ")" for r in g.itertuples()]
        at = f" ({cap.max():,.0f} steps)" if len(cap) else ""
        lines.append(f"{task}, best rows at the step cap{at}: " + "; ".join(cells) + ".")
    return lines


def _named(r) -> str:
    return " ".join(filter(None, (r.mixer, r.state, f"at {r.setting}")))


def _further(r) -> str:
    if not r.continued:
        return ""
    return f", {'retrained' if pd.notna(r.parted_at) else 'continued'} to {r.steps:,.0f} steps"


def continuation_lines(best: pd.DataFrame) -> list[str]:
    """The best rows trained further (`continue_to`), per task: how many continue their capped run's curve
    exactly, which were retrained from their first step (other code, or another CPU: float rounding differs)
    and part from it (`parted_at`): new draws of the same config, not the capped runs trained further; and
    which are rates the search pruned in a tie (`benchmarks.halving.tied`), where its own pick was not the best rate."""
    lines = []
    for task, g in best[best["continued"].fillna("") != ""].groupby("task"):
        tied = g[g["continued"].str.startswith(PRUNED_IN_A_TIE)]
        g = g.drop(tied.index)
        drawn = g[g["parted_at"].notna()].sort_values("parted_at")
        line = (f"{task}: {len(g)} best rows were trained past their search's cap (continue_to); "
                f"{len(g) - len(drawn)} continue their capped run's curve exactly" if len(g) else f"{task}: no best row was "
                f"trained past its search's cap")  # fmt: skip
        if len(drawn):
            cells = "; ".join(f"{_named(r)}, from step {r.parted_at:,.0f}" for r in drawn.itertuples())
            line += (f"; {len(drawn)} were retrained from their first step, under other code or on another CPU, and "
                     f"their validation curves part from the capped runs' ({cells}): new draws of the same config, as "
                     f"another seed would be, not those runs trained further")  # fmt: skip
        if len(tied):
            cells = "; ".join(
                f"{_named(r)} at lr {r.lr:g}, {r.accuracy:.3f} after {r.steps:,.0f} steps" for r in tied.itertuples()
            )
            line += (f". {len(tied)} best rows are rates the search pruned at a rung in a tie with the rate it promoted "
                     f"(validation accuracies within two standard errors, the pruned run's loss lower), trained on to the "
                     f"same cap: {cells}; the search's own pick there was not the best rate")  # fmt: skip
        lines.append(line + ".")
    return lines


def protocol_change_lines(change: pd.DataFrame, shift: float = ACCURACY_SHIFT) -> list[str]:
    """What training to convergence changed (`tables.protocol_change`): the rows whose accuracy moved by
    more than `shift`, and how many of the rows that rose had been capped while still improving."""
    if change.empty:
        return []
    delta = change["accuracy now"] - change["accuracy before"]
    up, down = change[delta > shift], change[delta < -shift]
    capped = int((up["ended before"] == "capped").sum())
    lines = [
        f"Of {len(change)} rows trained under both protocols, {len(up)} rose by more than {shift} ({capped} of them had "
        f"reached the step cap still improving) and {len(down)} fell by more than {shift}."
    ]
    for rows, word in ((up, "Rose"), (down, "Fell")):
        if not rows.empty:
            cells = [
                " ".join(filter(None, (r["mixer"], r["state"], f"at {r['setting']}")))
                + f" {r['accuracy before']:.3f} -> {r['accuracy now']:.3f}"
                for _, r in rows.iterrows()
            ]
            lines.append(f"{word}: " + "; ".join(cells) + ".")
    return lines
