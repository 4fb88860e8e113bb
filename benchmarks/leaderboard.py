"""Build the leaderboard (`leaderboard.md`, `leaderboard.csv`) from a store's records.

python -m benchmarks.leaderboard [store_dir]     # default: results
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from benchmarks.store import Store

COLUMNS = {
    "mixer": "mixer",
    "task": "task",
    "seq_len": "L",
    "memory_demand": "kv pairs",
    "accuracy": "accuracy",
    "ess_mean": "ESS (mean)",
    "entropy_ess_mean": "entropy ESS",
    "tss": "TSS",
    "utilization": "ESS/TSS",
    "cache_bytes": "cache bytes",
    "parameters": "params",
    "steps": "steps",
    "seed": "seed",
    "commit": "commit",
    "device": "device",
    "kernels": "kernel",
    "wall_time_s": "time (s)",
    "key": "record",
}


def rows(records: list[dict]) -> pd.DataFrame:
    out = []
    for r in records:
        if r.get("status") != "ok":
            continue
        m, prov, cfg = r["metrics"], r["provenance"], r["config"]
        commit = prov["commit"][:10] + ("+dirty" if prov.get("dirty") else "")
        out.append(
            {
                "mixer": cfg["architecture"]["name"],
                "task": m["task"]["name"],
                "seq_len": m["task"]["seq_len"],
                "memory_demand": m["task"]["memory_demand"],
                "accuracy": m["accuracy"],
                "ess_mean": m["ess"]["ess_mean"],
                "entropy_ess_mean": m["ess"]["entropy_ess_mean"],
                "tss": m["tss"],
                "utilization": m["utilization"],
                "cache_bytes": m["cache_bytes"],
                "parameters": m["parameters"],
                "steps": m["steps"],
                "seed": r["seed"],
                "commit": commit,
                "device": prov["device"],
                "kernels": ",".join(m["kernels"]),
                "wall_time_s": r["wall_time_s"],
                "key": r["key"],
            }
        )
    df = pd.DataFrame(out, columns=list(COLUMNS))
    return df.sort_values(["task", "seq_len", "memory_demand", "accuracy"], ascending=[True, True, True, False])


def _markdown(df: pd.DataFrame) -> str:
    shown = df.rename(columns=COLUMNS)
    fmt = {"accuracy": "{:.3f}", "ESS (mean)": "{:.2f}", "entropy ESS": "{:.2f}", "ESS/TSS": "{:.3f}"}
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    for _, row in shown.iterrows():
        cells = [fmt[c].format(v) if c in fmt else str(v) for c, v in row.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build(store_root: str | Path = "results") -> list[Path]:
    store = Store(store_root)
    records = store.records()
    df = rows(records)
    failed = [r for r in records if r.get("status") != "ok"]
    root = Path(store_root)
    root.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = root / "leaderboard.csv", root / "leaderboard.md"
    df.to_csv(csv_path, index=False)
    text = [
        "# mixerbench leaderboard",
        "",
        f"{len(df)} runs ({len(failed)} failed). Accuracy: test accuracy on scored positions. "
        "ESS: tolerance effective state-size per channel, mean over channels, layers, test examples "
        "and the interior window of splits (see the record's `ess.window`). TSS: theoretical state size "
        "per channel (for attention: the sequence length). cache bytes: decoding state of all layers "
        "after L tokens at batch 1. Each row's full config, versions and curves are in "
        "`records/<record>.json`; rerun it with the command in the README.",
        "",
        _markdown(df),
    ]
    if failed:
        text += ["", "## Failed runs", "", "| record | mixer | error |", "|---|---|---|"]
        for r in failed:
            text.append(f"| {r['key']} | {r['config']['architecture']['name']} | {r.get('error', '').replace('|', '/')[:200]} |")
    md_path.write_text("\n".join(text) + "\n")
    return [md_path, csv_path]


if __name__ == "__main__":
    for p in build(sys.argv[1] if len(sys.argv) > 1 else "results"):
        print(p)
