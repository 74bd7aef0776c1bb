"""`tritonstack bench`: served latency and throughput on Triton against the same artifact in process
(needs the 'bench' extra)."""

from tritonstack.extras import require

require(__name__, "bench")
