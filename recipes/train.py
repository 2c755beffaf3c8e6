"""Train MFNet with a multimodal PEFT tuner.

    accelerate launch recipes/train.py --tuner mmlora --rank 4 --preset demo
    accelerate launch recipes/train.py --tuner mmadapter --dataset vaihingen --data-dir data/Vaihingen \
        --base-model facebook/sam-vit-base --preset paper --output-dir outputs/vaihingen-mmadapter

Every option: `python recipes/train.py --help`; the loop lives in `mfpeft.engine.training`. Errors are one line
(exit 1; `MFPEFT_DEBUG=1` shows the traceback); SIGTERM / Ctrl-C keep the complete checkpoints and say how to resume.
"""

from __future__ import annotations

import sys

from mfpeft.cli.training import parse_training_arguments
from mfpeft.engine.training import train
from mfpeft.errors import run_command


def run() -> int:
    train(parse_training_arguments())
    return 0


def main() -> int:
    return run_command("train.py", run)


if __name__ == "__main__":
    sys.exit(main())
