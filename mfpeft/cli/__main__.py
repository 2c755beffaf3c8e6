"""``python -m mfpeft.cli`` (and ``accelerate launch -m mfpeft.cli``) runs the command line."""

import sys

from .commands import main

sys.exit(main())
