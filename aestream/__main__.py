"""``python -m aestream``: the same as the ``aestream`` command."""

from aestream.commands.entry import main

raise SystemExit(main())
