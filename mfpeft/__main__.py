"""``python -m mfpeft`` (and ``accelerate launch -m mfpeft predict ...``) runs the command line, as ``mfpeft``."""

import sys

from .cli.commands import main

sys.exit(main())
