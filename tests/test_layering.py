"""Lower layers never import upper ones: architectures/ and tasks/ sit below benchmarks/, and the
throughput tables sit below the leaderboard (which uses them), not beside it in a cycle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_architectures_and_tasks_never_import_benchmarks():
    for folder in ("architectures", "tasks"):
        for path in (ROOT / folder).glob("*.py"):
            bad = {m for m in imported_modules(path) if m.split(".")[0] == "benchmarks"}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_throughput_does_not_import_the_leaderboard():
    assert "benchmarks.leaderboard" not in imported_modules(ROOT / "benchmarks" / "throughput.py")


def test_operator_types_are_importable_where_users_import_them():
    from architectures.operators import MixerOperator, Semiseparable
    from benchmarks.ess import Semiseparable as PublicSemiseparable
    from benchmarks.ess import effective_state_size  # noqa: F401

    assert PublicSemiseparable is Semiseparable
    from architectures.base import MixerOperator as BaseMixerOperator

    assert BaseMixerOperator is MixerOperator
