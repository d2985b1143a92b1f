"""``python -m gateway serve --config PATH``."""

import sys

from gateway.cli import main

sys.exit(main())
