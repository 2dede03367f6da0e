"""``python -m aestream``: the same as the ``aestream`` command."""

from aestream.commands.cli import main

raise SystemExit(main())
