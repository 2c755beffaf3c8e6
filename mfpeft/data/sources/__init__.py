"""Data sources: where the tiles of a data set are, and how they split into train / validation / test.

``get_source(name, data_dir, **options)`` returns ``{"train": [Tile], "validation": [...], "test": [...]}``.
Sources only find files and describe them (:class:`~mfpeft.data.tile.Tile`); reading is
:class:`~mfpeft.data.raster.TileReader`'s job. Folder layouts are described in ``docs/data.md``.

One module per layout, each registering its sources by name (`register_source`): ``isprs`` (vaihingen,
potsdam), ``mmhunan``, ``folder`` (any folder of rasters), ``demo`` (the generated city, a folder) and ``hf``
(Hugging Face datasets). ``options`` is the one table of source options the command line is built from;
``registry`` holds the names and `get_source`, ``splits`` and ``paths`` what the layouts share.

A facade (`mfpeft.common.lazy`); only registration is eager: the layout modules are imported with the
package, so every built-in source is registered before `get_source` can be called.
"""

from typing import TYPE_CHECKING

from ...common.lazy import lazy_facade
from . import demo, folder, hf, isprs, mmhunan  # noqa: F401  (registration is eager)

_EXPORTS = {
    "SPLITS": ".splits",
    "Splits": ".splits",
    "available_sources": ".registry",
    "get_source": ".registry",
    "register_source": ".registry",
    "POTSDAM_SPLITS": ".isprs",
    "VAIHINGEN_SPLITS": ".isprs",
    "DEMO_PATTERNS": ".demo",
    "METADATA_KEY": ".hf",
    "read_metadata": ".hf",
    "SOURCE_OPTIONS": ".options",
    "SourceOption": ".options",
    "source_keywords": ".options",
}
__getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)

if TYPE_CHECKING:  # the names for type checkers and IDEs; at run time they resolve lazily
    from .demo import DEMO_PATTERNS  # noqa: F401
    from .hf import METADATA_KEY, read_metadata  # noqa: F401
    from .isprs import POTSDAM_SPLITS, VAIHINGEN_SPLITS  # noqa: F401
    from .options import SOURCE_OPTIONS, SourceOption, source_keywords  # noqa: F401
    from .registry import available_sources, get_source, register_source  # noqa: F401
    from .splits import SPLITS, Splits  # noqa: F401
