"""Shared fixtures."""

from __future__ import annotations

import pytest
from transformers import SamVisionModel

import mfpeft  # noqa: F401  (registers the tuners with peft)
from tests.sam_fixtures import make_tiny_sam


@pytest.fixture
def tiny_sam() -> SamVisionModel:
    return make_tiny_sam(seed=0)
