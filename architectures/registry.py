"""Registry of token mixers: `build(name, **config)` and `names()`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn


class UnknownMixerError(KeyError, ValueError):
    """An unknown mixer name; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

# Reference mixers: registry name -> "module:Class", imported on first use so
# that a broken optional dependency of one mixer never breaks the others. In the order they joined
# the suite: a sweep over all of them (`reference_names`) runs in this order, so that one stopped
# part-way covers the first ones evenly and a new mixer joins at the end.
_REFERENCE = {
    "attention": "architectures.attention:Attention",
    "sliding_window": "architectures.sliding_window:SlidingWindowAttention",
    "linear_attention": "architectures.linear_attention:LinearAttention",
    "gla": "architectures.gla:GLA",
    "wla": "architectures.wla:WLA",
    "mamba": "architectures.mamba:Mamba",
    "mamba2": "architectures.mamba2:Mamba2",
    "hyena": "architectures.hyena:Hyena",
    "lru": "architectures.lru:LRU",
    "based": "architectures.based:Based",
    "deltanet": "architectures.deltanet:DeltaNet",
    "gated_deltanet": "architectures.gated_deltanet:GatedDeltaNet",
    "rwkv7": "architectures.rwkv7:RWKV7",
    "h3": "architectures.h3:H3",
}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a mixer (a class or any callable returning an nn.Module) under `name`."""
    if name in _REGISTRY or name in _REFERENCE:
        raise ValueError(f"mixer {name!r} is already registered")
    _REGISTRY[name] = factory


def names() -> list[str]:
    return sorted({*_REFERENCE, *_REGISTRY})


def reference_names() -> list[str]:
    """The suite's own mixers, in the order they joined it (never one registered in-process)."""
    return list(_REFERENCE)


def resolve(name: str) -> Callable[..., nn.Module]:
    """The factory registered under `name`, or a class given as "package.module:ClassName"."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _REFERENCE:
        module, cls = _REFERENCE[name].split(":")
        return getattr(importlib.import_module(module), cls)
    if ":" in name:
        module_name, _, cls = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"cannot load mixer class {name!r}: {e}") from None
        if not hasattr(module, cls):
            found = sorted(
                n
                for n, v in vars(module).items()
                if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == module.__name__
            )
            raise ValueError(
                f"cannot load mixer class {name!r}: {module_name} has no {cls!r}; "
                + (f"its mixer classes: {', '.join(found)}" if found else "it defines no nn.Module class")
            )
        return getattr(module, cls)
    raise UnknownMixerError(f"unknown mixer {name!r}; known mixers: {', '.join(names())} (or give 'module:ClassName')")


def build(name: str, **config) -> nn.Module:
    """Build the mixer registered as `name` with the given config (e.g. d_model=64)."""
    factory = resolve(name)
    try:
        return factory(**config)
    except TypeError as e:  # unknown keyword: say which mixer and what it accepts
        raise ValueError(f"mixer {name!r}: bad config {config}: {e}") from None
