"""In-process runtimes (ONNX Runtime, TorchScript, TensorRT), shared by the exporter's verification,
the benchmarks' baselines and the TensorRT backend (needs the 'export' extra)."""

from tritonstack.extras import require

require(__name__, "export")
