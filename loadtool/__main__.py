"""`python -m loadtool`: the same as the `chat-load` command."""

import sys

from loadtool.cli import main

sys.exit(main())
