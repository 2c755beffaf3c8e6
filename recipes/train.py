"""Train MFNet with a multimodal PEFT tuner.

    accelerate launch recipes/train.py --tuner mmlora --rank 4 --preset demo
    accelerate launch recipes/train.py --tuner mmadapter --dataset vaihingen --data-dir data/Vaihingen \
        --base-model facebook/sam-vit-base --preset paper --output-dir outputs/vaihingen-mmadapter

Every option: `python recipes/train.py --help`; the loop lives in `mfpeft.engine.training`.
"""

from __future__ import annotations

import sys

from mfpeft.engine.command_line import parse_training_arguments
from mfpeft.engine.training import train


def main() -> int:
    try:
        train(parse_training_arguments())
    except (ValueError, OSError) as error:  # bad input: one clear line, no traceback
        print(f"train.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
