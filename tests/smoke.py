"""The flags of a pipeline-sized training run: the demo city, a tiny random SAM, small chips, a step or two."""

from __future__ import annotations


def smoke_flags(steps: int = 2, chip: int = 64) -> list[str]:
    """``mfpeft train`` / ``recipes/train.py`` flags; ``chip`` is the chip size and the evaluation stride."""
    return [
        *("--preset", "demo", "--base-model", "random:tiny", "--chip-size", str(chip)),
        *("--max-steps", str(steps), "--batch-size", "2", "--eval-stride", str(chip)),
    ]
