"""Serves `platform: "pytorch_libtorch"` models (TorchScript) through PyTorch (Triton's Python
backend). Inputs are passed positionally in the config's input order, `forward`'s argument order.
Run as Triton 24.10's pytorch backend runs them: `forward` must return a Tensor or a tuple of
Tensors of the config's dtypes, and the thread parameters are applied the way it applies them
(`tritonstack/formats.py` says how)."""

from __future__ import annotations

import stub_site  # noqa: F401  (first: puts the project and virtualenv on sys.path)

# isort: split

import torch

from tritonstack.formats import Format
from tritonstack.runtimes.device import enabled as device_io_enabled
from tritonstack.runtimes.device import torchscript_on_device
from tritonstack.runtimes.runners import output_tensors
from tritonstack.serve.batching import BatchedModel, Instance, RunFn
from tritonstack.spec import Array


class TritonPythonModel(BatchedModel):
    format = Format.TORCHSCRIPT

    def load(self, instance: Instance) -> RunFn:
        intra, inter = instance.threads  # 0 (or absent): torch's default
        if inter > 0:
            raise ValueError(
                "parameter INTER_OP_THREAD_COUNT would abort Triton 24.10 with its native pytorch backend "
                "(at::set_num_interop_threads throws on the second model load): remove it"
            )
        if intra > 0:  # at::set_num_threads, as the native backend calls it: for the whole process
            torch.set_num_threads(intra)
        use_gpu = instance.gpu_id is not None and torch.cuda.is_available()
        device = torch.device(f"cuda:{instance.gpu_id}" if use_gpu else "cpu")
        module = torch.jit.load(str(instance.path), map_location=device).eval()  # type: ignore[no-untyped-call]
        if use_gpu and device_io_enabled():  # inputs in GPU memory stay there (runtimes/device.py)
            self.device_run = torchscript_on_device(module, device)

        def run(feeds: list[Array]) -> list[Array]:
            with torch.inference_mode():
                result = module(*(torch.from_numpy(f).to(device) for f in feeds))
            return [t.cpu().numpy() for t in output_tensors(result)]

        return run
