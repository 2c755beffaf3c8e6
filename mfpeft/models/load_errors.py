"""The error of an encoder that cannot be loaded: one type for every family (SAM's `SamLoadError` is one)."""

from __future__ import annotations


class EncoderLoadError(OSError):
    """An encoder checkpoint could not be found or read (the message names the source and what is wrong)."""
