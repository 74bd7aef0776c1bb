"""`python -m tritonstack.cli`: the `tritonstack` command."""

import sys

from tritonstack.cli import main

sys.exit(main())
