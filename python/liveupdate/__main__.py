"""python -m liveupdate: see liveupdate.cli."""

from .cli import main

raise SystemExit(main())
