"""Imported first by each module of tritonstack.export that needs the 'export' extra: without it,
importing one raises MissingExtra naming the extra instead of torch's ImportError."""

from tritonstack.extras import require

require("tritonstack.export", "export")
