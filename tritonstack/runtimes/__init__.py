"""In-process runtimes (ONNX Runtime, TorchScript, TensorRT), shared by the exporter's verification,
the benchmarks' baselines and the TensorRT backend."""
