"""`python -m include.nightly_ci COMMAND`: see include/nightly_ci/cli/main.py."""

import sys

from include.nightly_ci.cli.main import main

sys.exit(main())
