"""Imported first by every `model.py`: gives the backend stub our import path.

The stub embeds its own Python in isolated mode, so it ignores `PYTHONPATH` and sees only the
system's site-packages. The launcher passes its interpreter's path (the project and the
virtualenv's site-packages) in `TRITONSTACK_STUB_PATH`; each entry is added as a site directory,
so `.pth` files (editable installs) work too, ahead of the system's packages. Without the
variable, importing this does nothing.
"""

from __future__ import annotations

import os
import site
import sys

ENV_VAR = "TRITONSTACK_STUB_PATH"


def extend_sys_path() -> None:
    before = list(sys.path)
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry and entry not in before:
            site.addsitedir(entry)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


extend_sys_path()
