"""``python -m mapper_sdk`` is the ``mapper-sdk`` command."""

from mapper_sdk.cli import main

raise SystemExit(main())
