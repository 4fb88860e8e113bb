"""Command-line conveniences shared by the entry points.

`architecture=package.module:ClassName` (a mixer from the user's own code) is not a config-group
option, so it becomes `architecture=custom architecture.name=package.module:ClassName`; the
mixer's own keyword defaults then apply, and `architecture.<param>=...` overrides them.
A `_target_` works too: `architecture=custom +architecture._target_=package.module.ClassName`.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

CONF = Path(__file__).resolve().parent / "conf" / "architecture"
PRESETS = Path(__file__).resolve().parent / "conf" / "preset"


class Parser(argparse.ArgumentParser):
    """argparse with the suite's usage errors: one line naming the argument and the fix, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def wants_help(args: list[str], usage: str, doc: str) -> bool:
    """For the commands that take key=value overrides: whether `-h`/`--help` was asked for, then printed
    (usage, then the module's docstring); the command exits 0."""
    if not any(a in ("-h", "--help") for a in args):
        return False
    print(f"usage: {usage}\n\n{doc.strip()}")
    return True


def _is_out_of_tree(value: str) -> bool:
    return ":" in value and not (CONF / f"{value}.yaml").exists()


def check_preset(value: str) -> None:
    """Refuse (exit 2) a preset that is not a plain name: presets come only from conf/preset/, and a name
    with a path in it would load a YAML from anywhere."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
        print(f"configuration error: preset {value!r} is not a preset name; choose one of {', '.join(known)}", file=sys.stderr)
        raise SystemExit(2)


def normalize(args: list[str]) -> list[str]:
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "preset":
            check_preset(value.strip("'\""))
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


def _close(word: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f"did you mean {' or '.join(near)}? " if near else ""


def explain(error: BaseException, overrides: list[str]) -> str:
    """One line for a composition error: the unknown key or option, the closest valid ones, and the
    valid ones (instead of Hydra's hint to add the key with `+`, which would silently do nothing)."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    from omegaconf import OmegaConf

    typed = _type_error(error)
    if typed:
        return typed
    if isinstance(error, OverrideParseException):
        return f"{error.override!r} is not an override: give key=value, e.g. seed=1"
    text = str(error)
    missing = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        return f"unknown {group} {option!r}: {_close(option, options)}choose one of {', '.join(options)}"
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        parent, _, leaf = key.rpartition(".")
        rest = [o for o in overrides if o.partition("=")[0].lstrip("+~") != key and not o.startswith(("-", "hydra"))]
        try:
            parsed = OverridesParser.create().parse_overrides(rest)
            rest = [  # a sweep (a,b,c) by its first value
                f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line
                for o in parsed
            ]
            with initialize_config_module("benchmarks.conf", version_base="1.3"):
                node = (
                    OmegaConf.select(compose("config", overrides=rest), parent) if parent else compose("config", overrides=rest)
                )
            keys = sorted(node.keys()) if node is not None and OmegaConf.is_dict(node) else []
        except Exception:  # noqa: BLE001 - the explanation must not fail where the config did
            keys = []
        where = f"{parent}." if parent else ""
        valid = f"keys of {parent or 'the config'}: {', '.join(where + k for k in keys)}" if keys else ""
        return f"unknown key {key!r}: {_close(leaf, [str(k) for k in keys]).replace('mean ', 'mean ' + where)}{valid}"
    return one_line(error)


# what each of OmegaConf's conversion messages asks for, as a fix
WANTED = (("Integer", "an integer"), ("Float", "a number"), ("bool", "true or false"), ("String", "a string"))


def _type_error(error: BaseException) -> str | None:
    """One line for a value the schema refuses (benchmarks/conf/__init__.py): the key, why, and what to give."""
    from omegaconf.errors import ValidationError

    cause = error if isinstance(error, ValidationError) else error.__cause__
    if not isinstance(cause, ValidationError) or not getattr(cause, "full_key", None):
        return None
    why = str(cause.msg).splitlines()[0]
    want = next((w for name, w in WANTED if name in why), "a value of its type")
    return f"{cause.full_key}: {why}; give {want}"


def one_line(error: BaseException) -> str:
    """An error's message on one line (Hydra's and OmegaConf's span several, with full-key blocks)."""
    lines = [
        ln.strip() for ln in str(error).splitlines() if ln.strip() and not ln.strip().startswith(("full_key", "object_type"))
    ]
    return " ".join(lines) or type(error).__name__
