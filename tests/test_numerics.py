"""Denormal floats are flushed by every command (they made the CPU training step 7x slower)."""

import pytest
import torch

from mfpeft.common import flush_denormals


def test_flush_denormals_turns_subnormal_values_into_zero() -> None:
    tiny = torch.tensor([1e-40, -3e-39, 1e-30], dtype=torch.float32)
    if not flush_denormals():
        pytest.skip("this CPU has no flush-to-zero mode")
    result = (tiny * 1.0).tolist()
    assert result[:2] == [0.0, 0.0]  # below float32's normal range (1.2e-38): zero
    assert result[2] == pytest.approx(1e-30)  # normal values untouched
