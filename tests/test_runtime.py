"""Process settings every command runs with: the denormal flush (it made the CPU step 7x slower), heap retention."""

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


def test_retain_freed_memory_sets_glibc_or_says_it_cannot() -> None:
    import platform
    import sys

    from mfpeft.common import retain_freed_memory

    is_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is is_glibc


def test_prepare_process_runs_twice() -> None:
    from mfpeft.common import prepare_process

    prepare_process()
    prepare_process()
    assert torch.tensor([1e-40]).mul(1.0).item() in (0.0, pytest.approx(1e-40))
