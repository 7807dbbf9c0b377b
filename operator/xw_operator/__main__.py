"""``python -m xw_operator`` is the ``xw`` command."""

from xw_operator.cli import main

main()
