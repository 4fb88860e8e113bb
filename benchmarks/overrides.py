"""Command-line conveniences shared by the entry points.

`architecture=package.module:ClassName` (a mixer from the user's own code) is not a config-group
option, so it becomes `architecture=custom architecture.name=package.module:ClassName`; the
mixer's own keyword defaults then apply, and `architecture.<param>=...` overrides them.
A `_target_` works too: `architecture=custom +architecture._target_=package.module.ClassName`.
"""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parent / "conf" / "architecture"


def _is_out_of_tree(value: str) -> bool:
    return ":" in value and not (CONF / f"{value}.yaml").exists()


def normalize(args: list[str]) -> list[str]:
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "architecture" and _is_out_of_tree(value.strip("'\"")):
            out += ["architecture=custom", f"architecture.name='{value.strip(chr(39) + chr(34))}'"]
        else:
            out.append(arg)
    return out


def architecture_from_overrides(args: list[str]) -> str | None:
    """The mixer named by `architecture=...` / `architecture.name=...` / `architecture._target_=...`, if any."""
    found = None
    for arg in normalize(args):
        key, _, value = arg.partition("=")
        key, value = key.lstrip("+"), value.strip("'\"")
        if key == "architecture" and value != "custom":
            found = value
        elif key == "architecture.name":
            found = value
        elif key == "architecture._target_":
            module, _, cls = value.rpartition(".")
            found = f"{module}:{cls}"
    return found


def one_line(error: BaseException) -> str:
    """An error's message on one line (Hydra's and OmegaConf's span several, with full-key blocks)."""
    lines = [
        ln.strip() for ln in str(error).splitlines() if ln.strip() and not ln.strip().startswith(("full_key", "object_type"))
    ]
    return " ".join(lines) or type(error).__name__
