"""`tritonstack bench`: served latency and throughput on Triton against the same artifact in process."""
