"""``python -m bench.fuzz``: see :mod:`bench.fuzz.run`."""

from bench.fuzz.run import main

raise SystemExit(main())
