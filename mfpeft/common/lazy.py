"""The facade rule of every ``__init__.py``: one table of public names, each imported from its module on first use.

Like transformers' lazy top-level module: ``import mfpeft.data`` costs nothing until a name is used, every public
name is listed in one place (``__all__``, ``dir()``), and an unknown name is an `AttributeError` naming it.

Usage in a package's ``__init__.py``::

    _EXPORTS = {"Tile": ".tile", "get_source": ".sources"}
    __getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_facade(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(``__getattr__``, ``__dir__``, ``__all__``) for ``package`` exporting ``{name: module}``.

    ``module`` is relative to ``package`` when it starts with a dot. A resolved name is cached in the package's
    namespace, so later look-ups are plain attribute reads.
    """
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(names) | set(vars(sys.modules[package])))

    return __getattr__, __dir__, names
