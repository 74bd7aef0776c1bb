"""How a model is deployed, as `config.pbtxt` says it: device and instance count, threads per
instance, the dynamic batcher's queue delay, ONNX Runtime's GPU accelerator, and warm-up requests.

Written for Triton's native backends field for field; our Python-based backends read the same
fields (instance kind and device id from Triton, the accelerator from `optimization`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tritonstack.errors import UsageError
from tritonstack.export.flags import option
from tritonstack.export.native_rules import FORCE_CPU_ONLY_INPUT_TENSORS
from tritonstack.formats import Format
from tritonstack.spec import ModelSpec

if TYPE_CHECKING:  # imported where used: the CLI reads the options' flags without loading gRPC
    from tritonclient.grpc import model_config_pb2 as pb

_ACCELERATOR_NEEDS_GPU = "--ort-accelerator needs GPU instances: add --device gpu"
# The formats whose stand-ins take GPU inputs on a GPU instance (serve/backends, runtimes/device.py).
DEVICE_INPUT_FORMATS = (Format.ONNX, Format.TORCHSCRIPT)


class Device(str, enum.Enum):
    CPU = "cpu"
    GPU = "gpu"
    AUTO = "auto"  # GPU when one is visible at export time


class OrtAccelerator(str, enum.Enum):
    NONE = "none"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class DeploymentOptions:
    device: Device = option(Device.CPU, "instance kind in config.pbtxt (auto: GPU when one is visible)")
    instances: int = option(1, "model instances per device", metavar="N")
    ort_accelerator: OrtAccelerator = option(
        OrtAccelerator.NONE, "ONNX Runtime's GPU execution accelerator for ONNX models (GPU instances)"
    )
    trt_fp16: bool = option(False, "FP16 precision for --ort-accelerator tensorrt", name="--ort-trt-fp16")
    trt_workspace_bytes: int = option(
        1 << 30,
        "workspace limit in bytes for --ort-accelerator tensorrt",
        name="--ort-trt-workspace-bytes",
        metavar="BYTES",
    )
    # ONNX Runtime names a cached engine after the graph's name and tensor names, not its weights:
    # our ONNX exports name each graph after its content (export/onnx.py), so one folder serves
    # every model and version. Never a version directory (a write there reloads the version).
    trt_engine_cache: str = option(
        "/tmp/tritonstack_ort_trt_engines",
        "where ONNX Runtime's TensorRT accelerator keeps built engines, a path on the serving machine "
        "outside the model repository (empty: no cache, engines are rebuilt at every load)",
        name="--ort-trt-engine-cache",
        metavar="DIR",
    )
    warmup_batch_sizes: tuple[int, ...] = option(
        (1,), "batch sizes of the warm-up requests in config.pbtxt, comma-separated", metavar="N,N"
    )
    # 0: the batcher sends what is queued as soon as an instance is free, so a lone request never
    # waits, and under load batches still form while the instance is busy. Measured against 100 us
    # (benchmarks/OVERHEAD.md): Triton's queue time per request at concurrency 1 fell from ~190-210
    # to ~50-60 us (H100 and CPU); concurrency-16 throughput moved -9% to +19% by model.
    max_queue_delay_us: int = option(
        0,
        "dynamic batcher's wait for more requests (0: batches form while instances are busy)",
        metavar="US",
    )
    # Intra-op threads per instance (0: the runtime's default, one per core). Written for the native
    # backends too, whose own default is every core: ONNX Runtime's per session (inter-op 1), the
    # pytorch backend's for the whole server process (tritonstack/formats.py). Measured on 2 cores
    # (benchmarks/OVERHEAD.md): 2 threads slowed batch 1 (p50 +2% to +55%, concurrency-16
    # throughput -42% to -2%) and sped batch 256 up (p50 -15% to -39%).
    intra_op_threads: int = option(
        1,
        "intra-op threads per instance (0: one per core); TorchScript: one count for the whole server, "
        "as Triton's pytorch backend applies it",
        metavar="N",
    )

    def __post_init__(self) -> None:
        if self.instances < 1:
            raise UsageError(f"--instances must be at least 1, got {self.instances}")
        if self.max_queue_delay_us < 0:
            raise UsageError(f"--max-queue-delay-us must be 0 or more, got {self.max_queue_delay_us}")
        if self.intra_op_threads < 0:
            raise UsageError(f"--intra-op-threads must be 0 or more, got {self.intra_op_threads}")
        if any(b < 1 for b in self.warmup_batch_sizes):
            raise UsageError("--warmup-batch-sizes must be positive")
        if self.trt_workspace_bytes < 1:
            raise UsageError(f"--ort-trt-workspace-bytes must be positive, got {self.trt_workspace_bytes}")
        if self.trt_engine_cache and not self.trt_engine_cache.startswith("/"):
            raise UsageError(
                f"--ort-trt-engine-cache {self.trt_engine_cache!r}: give an absolute path on the serving "
                "machine (a relative one lands in tritonserver's working directory), or '' for no cache"
            )
        if self.device is Device.CPU and self.ort_accelerator is not OrtAccelerator.NONE:
            raise UsageError(_ACCELERATOR_NEEDS_GPU)  # checked again once `auto` is resolved

    @property
    def instance_kind(self) -> str:
        if self.device is Device.AUTO:
            import torch

            return "KIND_GPU" if torch.cuda.is_available() else "KIND_CPU"
        return "KIND_GPU" if self.device is Device.GPU else "KIND_CPU"

    def check(self, formats: Iterable[Format]) -> None:
        """Raise a `UsageError` if Triton's backend for one of `formats` would refuse these
        options: called before any export work."""
        gpu = self.instance_kind == "KIND_GPU"
        formats = set(formats)
        if Format.TENSORRT in formats and not gpu:
            raise UsageError(
                "--formats tensorrt needs --device gpu: Triton's tensorrt backend loads plans only on "
                "KIND_GPU instances"
            )
        if Format.ONNX in formats and self.ort_accelerator is not OrtAccelerator.NONE and not gpu:
            raise UsageError(_ACCELERATOR_NEEDS_GPU)


def apply_deployment(
    config: pb.ModelConfig, spec: ModelSpec, fmt: Format, options: DeploymentOptions
) -> None:
    """Add the instance group, threads, dynamic batching, ONNX Runtime accelerator and warm-up to
    `config`, which `spec.to_config()` made (the exporter's `build_config` is the one caller)."""
    from tritonclient.grpc import model_config_pb2 as pb

    options.check([fmt])
    config.instance_group.add(
        count=options.instances, kind=pb.ModelInstanceGroup.Kind.Value(options.instance_kind)
    )
    if fmt.thread_parameters is not None:
        intra, inter = fmt.thread_parameters
        config.parameters[intra].string_value = str(options.intra_op_threads)
        if fmt is not Format.TORCHSCRIPT:  # it aborts Triton 24.10 (tritonstack/formats.py)
            config.parameters[inter].string_value = "1"
    if options.instance_kind == "KIND_GPU" and fmt in DEVICE_INPUT_FORMATS:
        config.parameters[FORCE_CPU_ONLY_INPUT_TENSORS].string_value = "no"
    config.dynamic_batching.SetInParent()
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    if fmt is Format.ONNX and options.ort_accelerator is not OrtAccelerator.NONE:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name=options.ort_accelerator.value
        )
        if options.ort_accelerator is OrtAccelerator.TENSORRT:
            accelerator.parameters["precision_mode"] = "FP16" if options.trt_fp16 else "FP32"
            accelerator.parameters["max_workspace_size_bytes"] = str(options.trt_workspace_bytes)
            cache = options.trt_engine_cache
            accelerator.parameters["trt_engine_cache_enable"] = "1" if cache else "0"
            if cache:
                accelerator.parameters["trt_engine_cache_path"] = cache
    for batch in options.warmup_batch_sizes:
        _add_warmup(config, spec, min(batch, spec.max_batch_size))


def _add_warmup(config: pb.ModelConfig, spec: ModelSpec, batch: int) -> None:
    """Random floats, but zero ids: a random id could fall outside its embedding table. Shapes
    are the config's dims, as a request carries them (a scalar per row as [1])."""

    warmup = config.model_warmup.add(name=f"warmup_batch_{batch}", batch_size=batch)
    for tensor, declared in zip(spec.inputs, config.input, strict=True):
        data = warmup.inputs[tensor.name]
        data.data_type = declared.data_type
        data.dims.extend(1 if d == -1 else d for d in declared.dims)
        if tensor.is_integer or tensor.dtype == "bool":
            data.zero_data = True
        else:
            data.random_data = True
