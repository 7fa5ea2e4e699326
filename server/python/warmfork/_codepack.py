"""Packing the code a run executes onto a few pages of its own, before the
server forks: see ``server/src/codepack.rs`` for why and how."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import NamedTuple

from . import _native

#: The modules whose code runs in workers, roughly in the order it runs;
#: those the server has loaded are packed (a server with a handler of its
#: own has no use for the python-compatible one's).
RUN_PATH = tuple(
    f"warmfork.{name}"
    for name in (
        "_worker", "_stdio", "_inherited", "pyoptions", "pymain", "_unraisable", "_prompt", "errors", "_codecache"
    )
)


class Packed(NamedTuple):
    """What :func:`pack` did."""

    #: Code objects now in the mapping.
    code_objects: int
    #: The bytes they take.
    size: int
    #: Whether something else took a block of the mapping while the copies
    #: were made, so that the allocator's free and realloc stay wrapped.
    wrapped: bool


# What the packing did: it is done once in a process (`serve` may be called
# again after it returns, and finds the code packed).
_packed: Packed | None = None


def packed() -> bool:
    """Whether :func:`pack` has packed the code in this process."""
    return _packed is not None


def pack() -> Packed:
    """Give the functions defined in the modules of :data:`RUN_PATH` the
    server has loaded, and the code objects those modules keep, copies of
    their code packed together; what the first packing did, when called
    again. Raises ``OSError`` when the memory for them cannot be had
    (nothing changes then); on another error, the functions copied so far
    keep their copies."""
    global _packed
    if _packed is None:
        modules = [sys.modules[name] for name in RUN_PATH if name in sys.modules]
        functions = list(functions_of(modules))
        kept = [(module, name, value) for module in modules for name, value in vars(module).items()
                if isinstance(value, types.CodeType)]  # fmt: skip
        copies, *figures = _native.pack(functions, [code for _, _, code in kept])
        for (module, name, _), copy in zip(kept, copies):
            setattr(module, name, copy)
        _packed = Packed(*figures)
    return _packed


def functions_of(modules: list[types.ModuleType]) -> Iterator[types.FunctionType]:
    """The functions and methods defined in ``modules`` (accessors of
    properties included), each once, in the order of their modules and
    lines."""
    seen: set[int] = set()
    for module in modules:
        found: list[types.FunctionType] = []
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                found.extend(function for member in vars(value).values() for function in _wrapped(member))
            else:
                found.extend(_wrapped(value))
        # Only those made here: a class may hold another module's function
        # (a dataclass's `__replace__` is the one of `dataclasses`).
        found = [function for function in found if function.__module__ == module.__name__ and id(function) not in seen]
        seen.update(map(id, found))
        yield from sorted(found, key=lambda function: function.__code__.co_firstlineno)


def _wrapped(value: object) -> list[types.FunctionType]:
    """The functions ``value`` is or wraps (a method, a property's
    accessors)."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    parts = [value.fget, value.fset, value.fdel] if isinstance(value, property) else [value]
    return [part for part in parts if isinstance(part, types.FunctionType)]
