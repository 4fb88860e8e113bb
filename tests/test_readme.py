"""The README's headline numbers are the published leaderboard's: a README edited by hand, or a
leaderboard rebuilt from new records without the README, fails here."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_table(lines: list[str]) -> list[str]:
    """The rows of the first Markdown table in `lines`, header included."""
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line.strip())
    return rows


def _headline_section(readme: str) -> list[str]:
    section = readme.split("## Headline result", 1)[1].split("\n## ", 1)[0]
    return section.splitlines()


def test_readme_headline_table_is_the_published_leaderboards():
    readme = (ROOT / "README.md").read_text()
    leaderboard = (ROOT / "results" / "leaderboard.md").read_text()
    assert _first_table(_headline_section(readme)) == _first_table(leaderboard.splitlines()), (
        "README's headline table differs from results/leaderboard.md: copy it from there"
    )


def test_readme_run_count_is_the_published_leaderboards():
    readme = " ".join(_headline_section((ROOT / "README.md").read_text()))
    leaderboard = (ROOT / "results" / "leaderboard.md").read_text()
    stated = re.search(r"([\d,]+) runs on a 2-core CPU", readme)
    measured = re.search(r"From ([\d,]+) runs in ", leaderboard)
    assert stated and measured
    assert stated.group(1).replace(",", "") == measured.group(1).replace(",", "")
