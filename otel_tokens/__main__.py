"""`python -m otel_tokens`: the same as the `otel-tokens` command."""

import sys

from otel_tokens.cli import main

sys.exit(main())
