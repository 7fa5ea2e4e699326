"""The type stubs of ``warmfork._native`` describe the built extension: every
name they declare exists, and every public name the extension exports is
declared."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from warmfork import _native

STUBS = Path(__file__).resolve().parent.parent / "server" / "python" / "warmfork" / "_native.pyi"


def declared() -> dict[str, set[str]]:
    """Top-level names of the stub file, each with its members (for classes)."""
    names: dict[str, set[str]] = {}
    for node in ast.parse(STUBS.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            names[node.name] = set()
        elif isinstance(node, ast.ClassDef):
            names[node.name] = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
    return names


def test_every_stub_is_in_the_extension() -> None:
    for name, members in declared().items():
        assert hasattr(_native, name), f"_native.pyi declares {name}, the extension has none"
        for member in members - {"__init__"}:
            assert hasattr(getattr(_native, name), member), f"_native.{name} has no {member}"


def test_every_public_name_of_the_extension_has_a_stub() -> None:
    exported = {name for name, value in inspect.getmembers(_native) if not name.startswith("_") and callable(value)}
    assert exported == set(declared())
