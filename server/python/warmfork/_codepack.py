"""Packing the code a run executes onto a few pages of its own, before the
server forks: see ``server/src/codepack.rs`` for why and how."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

from . import _native

#: The modules whose code runs in workers, roughly in the order it runs;
#: those the server has loaded are packed (a server with a handler of its
#: own has no use for the python-compatible one's).
RUN_PATH = tuple(
    f"warmfork.{name}"
    for name in ("_worker", "_stdio", "_inherited", "pyoptions", "pymain", "_unraisable", "_prompt", "errors")
)


# What the packing did: it is done once in a process (`serve` may be called
# again after it returns, and finds the code packed).
_packed: tuple[int, int] | None = None


def pack() -> tuple[int, int]:
    """Give the functions of the modules of :data:`RUN_PATH` the server has
    loaded, and the code objects those modules keep, copies of their code
    packed together. Returns how many
    code objects were packed and the bytes they take (the first packing's
    figures, when called again). Raises ``OSError`` when the memory for them
    cannot be had; nothing changes then."""
    global _packed
    if _packed is None:
        modules = [sys.modules[name] for name in RUN_PATH if name in sys.modules]
        functions = list(_functions(modules))
        kept = [(module, name, value) for module in modules for name, value in vars(module).items()
                if isinstance(value, types.CodeType)]  # fmt: skip
        copies, packed, size = _native.pack(functions, [code for _, _, code in kept])
        for (module, name, _), copy in zip(kept, copies):
            setattr(module, name, copy)
        _packed = (packed, size)
    return _packed


def _functions(modules: list[types.ModuleType]) -> Iterator[types.FunctionType]:
    """The functions and methods defined in ``modules``, each once, in the
    order of their modules and lines."""
    seen: set[int] = set()
    for module in modules:
        found = []
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                found.extend(_function(member) for member in vars(value).values())
            elif getattr(value, "__module__", None) == module.__name__:
                found.append(_function(value))
        found = [function for function in found if function is not None and id(function) not in seen]
        seen.update(map(id, found))
        yield from sorted(found, key=lambda function: function.__code__.co_firstlineno)


def _function(value: object) -> types.FunctionType | None:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    return value if isinstance(value, types.FunctionType) else None
