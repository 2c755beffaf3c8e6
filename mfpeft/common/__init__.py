"""Leaf modules that every layer may import (and that import nothing else of mfpeft): class names and
colours, the label encoding and input scaling that models record, numeric checks, process settings, the atomic
writer, the cache folder, the lazy-facade rule."""

from .lazy import lazy_facade

_EXPORTS = {
    "IGNORE_INDEX": ".classes",
    "ISPRS_CLASSES": ".classes",
    "ISPRS_PALETTE": ".classes",
    "colourise": ".classes",
    "default_palette": ".classes",
    "palette_or_default": ".classes",
    "LabelEncoding": ".label_encoding",
    "Scaling": ".scaling",
    "check_number": ".validation",
    "atomic_path": ".files",
    "write_atomically": ".files",
    "write_text": ".files",
    "cached_folder": ".cache",
    "flush_denormals": ".runtime",
    "prepare_process": ".runtime",
    "retain_freed_memory": ".runtime",
    "lazy_facade": ".lazy",
}
__getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)
