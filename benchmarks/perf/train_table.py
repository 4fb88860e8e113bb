"""The README's training-speed table from a pytest-benchmark JSON of `nox -s perf -- -k train_step`.

python -m benchmarks.perf.train_table .benchmarks/perf.json
"""

from __future__ import annotations

import json
import sys


def table(path: str) -> str:
    data = json.load(open(path))
    rows = {b["name"]: b for b in data["benchmarks"] if b["name"].startswith(("test_train_step[", "test_train_step_matmul_rate"))}
    gemm = rows.pop("test_train_step_matmul_rate", None)
    if gemm is None:
        raise SystemExit(f"{path}: no test_train_step_matmul_rate result; run nox -s perf -- -k train_step")
    rate = gemm["extra_info"]["flops"] / gemm["stats"]["median"]
    machine = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "this CPU")
    lines = [
        f"Measured on {machine}, {gemm['extra_info']['threads']} threads; fp32 matmul rate {rate / 1e9:.0f} GFLOP/s "
        "(median of a 1024x1024 GEMM, same run).",
        "",
        "| mixer | ms/step (median) | steps/s | share of the matmul rate |",
        "|---|---|---|---|",
    ]
    for name, b in sorted(rows.items(), key=lambda kv: kv[1]["params"]["name"]):
        median = b["stats"]["median"]
        share = b["extra_info"]["flops"] / median / rate
        lines.append(f"| `{name.split('[')[1].rstrip(']')}` | {1e3 * median:.1f} | {1 / median:.1f} | {100 * share:.0f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1] if len(sys.argv) > 1 else ".benchmarks/perf.json"))
