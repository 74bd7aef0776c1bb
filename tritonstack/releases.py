"""The NVIDIA Triton releases an export can target, and the runtimes each one ships.

A Triton container loads only what its own runtimes read: its ONNX Runtime refuses a newer opset
or IR version, its libtorch a newer TorchScript archive format, its TensorRT a plan built by
another TensorRT (unless built version-compatible and loaded with the tensorrt backend's
`--backend-config=tensorrt,version-compatible=true`). Sources, per field:

- `triton`, `onnxruntime`: triton-inference-server/server `build.py` on the release branch
  (r24.10: 2.51.0 and ORT 1.19.2; r25.01: 2.54.0 and ORT 1.20.1).
- `max_opset`, `max_ir_version`: the ONNX Runtime wheel of that exact version loading models
  stamped with opset 21/22 and IR 10/11 (both versions: opset 21 and IR 10 load, 22 and 11 are
  refused).
- `libtorch`: the NGC PyTorch build of the month, which the pytorch backend is built on (server
  `build.py`: upstream container = the release): Triton's compatibility matrix lists torch
  2.5.0a0+e000cf0ad9.nv24.10 and 2.6.0a0+ecf3bae40a.nv25.1.
- `tensorrt`: NVIDIA's frameworks support matrix; 25.01's 10.8.0.43 is on Triton's
  compatibility matrix, 24.10's 10.5.0 was not in what could be searched here (to confirm).
- `torchscript_max_format`: `caffe2/serialize/versions.h` kMaxSupportedFileFormatVersion, 0xA since
  torch 1.x and still in the libtorch of both releases.
- `interop_threads_safe`: pytorch_backend calls `at::set_num_interop_threads` per model load
  without a catch until r25.11 (pytorch_backend #159): a second call aborts the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonstack.errors import UsageError


@dataclass(frozen=True)
class TritonRelease:
    name: str  # the NGC tag's YY.MM
    triton: str
    onnxruntime: str
    max_opset: int  # highest ai.onnx opset its ONNX Runtime loads
    max_ir_version: int  # highest ONNX IR version its ONNX Runtime loads
    libtorch: str
    torchscript_max_format: int  # highest TorchScript archive format version its libtorch reads
    tensorrt: str
    interop_threads_safe: bool  # INTER_OP_THREAD_COUNT does not abort its pytorch backend

    def tensorrt_matches(self, built_with: str) -> bool:
        """Whether a plan built by TensorRT `built_with` is one this release's TensorRT loads as
        is (same major.minor.patch)."""
        return _release_triple(built_with) == _release_triple(self.tensorrt)

    def runs_version_compatible(self, built_with: str) -> bool:
        """Whether a version-compatible plan built by `built_with` runs here: same major
        version, built by this TensorRT or an older one."""
        built, ours = _release_triple(built_with), _release_triple(self.tensorrt)
        return built[0] == ours[0] and built <= ours


RELEASES = {
    r.name: r
    for r in (
        TritonRelease("24.10", "2.51.0", "1.19.2", 21, 10, "2.5.0a0+e000cf0ad9", 10, "10.5.0", False),
        TritonRelease("25.01", "2.54.0", "1.20.1", 21, 10, "2.6.0a0+ecf3bae40a", 10, "10.8.0", False),
    )
}
# The release of the Triton binary embedded here (nvidia-pytriton 0.7.0 ships Triton 2.51.0).
DEFAULT_RELEASE = "24.10"


def triton_release(name: str) -> TritonRelease:
    """The release named `YY.MM`; a usage error listing the known ones otherwise."""
    try:
        return RELEASES[name]
    except KeyError as exc:
        known = ", ".join(RELEASES)
        raise UsageError(f"--triton-release {name!r}: unknown release, choose from {known}") from exc


def _release_triple(version: str) -> tuple[int, ...]:
    """`10.5.0.18` -> (10, 5, 0): TensorRT's build number does not change what a plan needs."""
    parts = [int(p) for p in version.split(".")[:3] if p.isdigit()]
    return tuple(parts + [0] * (3 - len(parts)))
