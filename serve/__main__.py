"""`python -m serve RUN [options]`: the detached server process, exactly `smallgpt serve RUN [options]`
(the same logging, errors and exit status)."""

import sys

from tui.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
