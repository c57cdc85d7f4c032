"""``python -m planner.cli``: the ``fitcheck`` command."""

from planner.cli.main import main

main()
