"""The ``mfpeft`` command line: ``prepare``, ``train``, ``evaluate``, ``predict``, ``heatmap``."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
