"""What Triton's native backends accept, as their r24.10 sources read a model (the facts
`check-repo` holds a repository to). Only names and conventions live here; `check_repo` applies
them.

- onnxruntime_backend `src/onnxruntime.cc`: the model-level parameters it reads, and the
  TensorRT accelerator's parameters (any other key fails the load: "unknown parameter").
- pytorch_backend `src/libtorch.cc`: the parameters it reads, and how it binds the config's
  tensors to `forward` (GetNamingConvention): inputs by argument name when every config input is
  one, else by `<name>__<index>` when every name has one (the index is what follows the first
  `__`, all digits), else by position; outputs by `<name>__<index>`, else by position.
- tensorrt_backend: reads no model-level parameters; plans load only on KIND_GPU instances.
"""

from __future__ import annotations

import enum

from tritonstack.formats import Format


class Binding(str, enum.Enum):
    FORWARD_ARGUMENT = "by forward() argument name"
    NAMED_INDEX = "by the <name>__<index> suffix"
    POSITION = "by position in the config"


NATIVE_PARAMETERS: dict[Format, frozenset[str]] = {
    Format.ONNX: frozenset(
        {
            "execution_mode",
            "intra_op_thread_count",
            "inter_op_thread_count",
            "enable_mem_arena",
            "enable_mem_pattern",
            "memory.enable_memory_arena_shrinkage",
            "cudnn_conv_algo_search",
            "gpu_mem_limit",
            "arena_extend_strategy",
            "do_copy_in_default_stream",
        }
    ),
    Format.TORCHSCRIPT: frozenset(
        {
            "DISABLE_OPTIMIZED_EXECUTION",
            "ENABLE_CACHE_CLEANING",
            "INFERENCE_MODE",
            "DISABLE_CUDNN",
            "ENABLE_TENSOR_FUSER",
            "ENABLE_WEIGHT_SHARING",
            "ENABLE_JIT_PROFILING",
            "ENABLE_JIT_EXECUTOR",
            "INTRA_OP_THREAD_COUNT",
            "INTER_OP_THREAD_COUNT",
        }
    ),
    Format.TENSORRT: frozenset(),
}

ORT_TENSORRT_ACCELERATOR_PARAMETERS = frozenset(
    {
        "precision_mode",
        "max_workspace_size_bytes",
        "trt_max_partition_iterations",
        "trt_min_subgraph_size",
        "int8_calibration_table_name",
        "int8_use_native_calibration_table",
        "trt_dla_enable",
        "trt_dla_core",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_cache_prefix",
        "trt_dump_subgraphs",
        "trt_force_sequential_engine_build",
        "trt_context_memory_sharing_enable",
        "trt_layer_norm_fp32_fallback",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_detailed_build_log",
        "trt_build_heuristics_enable",
        "trt_sparsity_enable",
        "trt_builder_optimization_level",
        "trt_auxiliary_streams",
        "trt_tactic_sources",
        "trt_extra_plugin_lib_paths",
        "trt_profile_min_shapes",
        "trt_profile_max_shapes",
        "trt_profile_opt_shapes",
        "trt_cuda_graph_enable",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
    }
)

# Our own config keys (id bounds, the production version): every native backend ignores them.
OWN_PARAMETER_PREFIX = "tritonstack."
# Triton's Python backend copies a GPU instance's inputs to the host unless this says "no"; our
# stand-ins take them where they are (DLPack). The native backends ignore it and do so anyway.
FORCE_CPU_ONLY_INPUT_TENSORS = "FORCE_CPU_ONLY_INPUT_TENSORS"
STAND_IN_PARAMETERS = frozenset({FORCE_CPU_ONLY_INPUT_TENSORS})


def named_index(name: str) -> int | None:
    """The index of a `<name>__<index>` tensor name as libtorch.cc reads it (what follows the
    first `__`, all digits; nothing reads as 0, as its atoi does), or None."""
    _, sep, tail = name.partition("__")
    if not sep or not all(c.isdigit() for c in tail):
        return None
    return int(tail) if tail else 0


def input_binding(config_names: list[str], arguments: list[str]) -> Binding:
    if all(name in arguments for name in config_names):
        return Binding.FORWARD_ARGUMENT
    if all(named_index(name) is not None for name in config_names):
        return Binding.NAMED_INDEX
    return Binding.POSITION


def output_binding(config_names: list[str]) -> Binding:
    if all(named_index(name) is not None for name in config_names):
        return Binding.NAMED_INDEX
    return Binding.POSITION
