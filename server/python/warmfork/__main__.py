"""``python -m warmfork``: the same as the ``warmfork-server`` command."""

from .cli import main

raise SystemExit(main())
