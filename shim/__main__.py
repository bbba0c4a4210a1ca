"""`python -m shim` is the `scopeshim` command."""

from shim.cli import main

raise SystemExit(main())
