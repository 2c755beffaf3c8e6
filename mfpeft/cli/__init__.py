"""The ``mfpeft`` command line: ``prepare``, ``train``, ``evaluate``, ``predict``, ``heatmap``.

A facade (`mfpeft.common.lazy`): ``main`` and ``build_parser`` live in :mod:`mfpeft.cli.commands` and are
imported on first use, so ``import mfpeft.cli`` stays cheap.
"""

from typing import TYPE_CHECKING

from ..common.lazy import lazy_facade

_EXPORTS = {
    "build_parser": ".commands",
    "main": ".commands",
}
__getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)

if TYPE_CHECKING:  # the names for type checkers and IDEs; at run time they resolve lazily
    from .commands import build_parser, main  # noqa: F401
