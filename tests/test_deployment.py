"""Deployment options as config.pbtxt says them: instances, threads, ONNX Runtime accelerator,
warm-up."""

from __future__ import annotations

import dataclasses

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from tritonstack.errors import UsageError
from tritonstack.export.deployment import DeploymentOptions, Device, OrtAccelerator
from tritonstack.export.repository import build_config
from tritonstack.formats import Format
from tritonstack.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    "m",
    (TensorSpec("dense", "float32", (13,)), TensorSpec("ids", "int64", (26,), high=1000)),
    (TensorSpec("p", "float32", (1,)),),
    max_batch_size=64,
)


def _config(fmt: Format, options: DeploymentOptions) -> pb.ModelConfig:
    return build_config(SPEC, fmt, options)


def test_gpu_instances_and_tensorrt_accelerator() -> None:
    options = DeploymentOptions(
        device=Device.GPU, instances=2, ort_accelerator=OrtAccelerator.TENSORRT, trt_fp16=True
    )
    config = _config(Format.ONNX, options)
    [group] = config.instance_group
    assert (group.kind, group.count) == (group.KIND_GPU, 2)
    [accelerator] = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert not _config(Format.TORCHSCRIPT, options).optimization.HasField("execution_accelerators")


def test_ort_tensorrt_engine_cache_is_a_path_the_user_sets_never_the_version_directory() -> None:
    """Without a path ONNX Runtime writes engines to tritonserver's working directory (lost on a
    restart); our stand-in used to write them into the version directory (a reload trigger)."""
    gpu = DeploymentOptions(device=Device.GPU, ort_accelerator=OrtAccelerator.TENSORRT)
    default = _config(Format.ONNX, gpu)
    [accelerator] = default.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["trt_engine_cache_enable"] == "1"
    assert accelerator.parameters["trt_engine_cache_path"] == DeploymentOptions().trt_engine_cache
    with pytest.raises(UsageError, match="absolute path"):
        dataclasses.replace(gpu, trt_engine_cache="engines")
    chosen = _config(Format.ONNX, dataclasses.replace(gpu, trt_engine_cache="/var/cache/engines"))
    [accelerator] = chosen.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["trt_engine_cache_path"] == "/var/cache/engines"
    off = _config(Format.ONNX, dataclasses.replace(gpu, trt_engine_cache=""))
    [accelerator] = off.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["trt_engine_cache_enable"] == "0"
    assert "trt_engine_cache_path" not in accelerator.parameters


def test_warmup_uses_zero_ids_and_random_floats() -> None:
    config = _config(Format.TORCHSCRIPT, DeploymentOptions(warmup_batch_sizes=(1, 500)))
    assert [(w.name, w.batch_size) for w in config.model_warmup] == [
        ("warmup_batch_1", 1),
        ("warmup_batch_64", 64),
    ]
    inputs = config.model_warmup[0].inputs
    assert inputs["ids"].zero_data and list(inputs["ids"].dims) == [26]
    assert inputs["dense"].random_data


def test_cpu_is_the_default_and_accelerators_need_gpu() -> None:
    [group] = _config(Format.ONNX, DeploymentOptions()).instance_group
    assert group.kind == group.KIND_CPU
    with pytest.raises(UsageError, match="--device gpu"):
        _config(Format.ONNX, DeploymentOptions(ort_accelerator=OrtAccelerator.CUDA))
    with pytest.raises(UsageError, match="--instances"):
        DeploymentOptions(instances=0)
    with pytest.raises(UsageError, match="--ort-trt-workspace-bytes must be positive, got -1"):
        DeploymentOptions(trt_workspace_bytes=-1)


def test_queue_delay_defaults_to_zero_and_is_configurable() -> None:
    assert _config(Format.ONNX, DeploymentOptions()).dynamic_batching.max_queue_delay_microseconds == 0
    config = _config(Format.ONNX, DeploymentOptions(max_queue_delay_us=250))
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    with pytest.raises(UsageError, match="--max-queue-delay-us"):
        DeploymentOptions(max_queue_delay_us=-1)


def test_threads_are_written_under_the_native_backends_keys() -> None:
    """One intra-op thread by default, as both Triton's native backends and ours read it."""
    onnx = _config(Format.ONNX, DeploymentOptions()).parameters
    assert (onnx["intra_op_thread_count"].string_value, onnx["inter_op_thread_count"].string_value) == (
        "1",
        "1",
    )
    torchscript = _config(Format.TORCHSCRIPT, DeploymentOptions(intra_op_threads=4)).parameters
    assert torchscript["INTRA_OP_THREAD_COUNT"].string_value == "4"
    assert "intra_op_thread_count" not in torchscript
    with pytest.raises(UsageError, match="--intra-op-threads"):
        DeploymentOptions(intra_op_threads=-1)


def test_warmup_of_a_scalar_input_has_the_config_dims() -> None:
    """Triton checks warm-up shapes against the config's dims, where a scalar per row is [1]: an
    empty shape fails the model's load ("unexpected shape for input ... Expected [-1,1], got [1]")."""
    spec = ModelSpec("s", (TensorSpec("x", "float32", ()),), (TensorSpec("y", "float32", (1,)),))
    config = build_config(spec, Format.ONNX)
    assert list(config.model_warmup[0].inputs["x"].dims) == list(config.input[0].dims) == [1]


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize("device", list(Device))
def test_no_torchscript_config_sets_the_inter_op_threads(fmt: Format, device: Device) -> None:
    """Triton 24.10's pytorch backend calls at::set_num_interop_threads for every model that sets
    INTER_OP_THREAD_COUNT, and the second call aborts the server: no config of ours sets it."""
    if fmt is Format.TENSORRT and DeploymentOptions(device=device).instance_kind != "KIND_GPU":
        pytest.skip("plans need GPU instances")
    parameters = _config(fmt, DeploymentOptions(device=device, intra_op_threads=2)).parameters
    assert "INTER_OP_THREAD_COUNT" not in parameters


@pytest.mark.parametrize("device", [Device.CPU, Device.AUTO])
def test_tensorrt_plans_only_on_gpu_instances(device: Device) -> None:
    options = DeploymentOptions(device=device)
    if options.instance_kind == "KIND_GPU":
        pytest.skip("auto found a GPU")
    with pytest.raises(UsageError, match=r"^--formats tensorrt needs --device gpu: .*KIND_GPU") as err:
        options.check([Format.ONNX, Format.TENSORRT])
    assert "\n" not in str(err.value)
    [group] = _config(Format.TENSORRT, DeploymentOptions(device=Device.GPU)).instance_group
    assert group.kind == group.KIND_GPU


@pytest.mark.parametrize("fmt", [Format.ONNX, Format.TORCHSCRIPT, Format.TENSORRT])
@pytest.mark.parametrize("device", [Device.CPU, Device.GPU])
def test_gpu_instances_of_the_stand_ins_take_inputs_on_the_gpu(fmt: Format, device: Device) -> None:
    if fmt is Format.TENSORRT and device is Device.CPU:
        return  # refused: plans load only on GPU instances
    parameters = _config(fmt, DeploymentOptions(device=device)).parameters
    on_gpu = device is Device.GPU and fmt is not Format.TENSORRT  # the TensorRT stand-in takes host arrays
    assert (parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no") is on_gpu
