"""Out-of-vocabulary ids are handled inside the exported graphs, so every backend that runs them,
native or ours, gives the same answer: an id outside its own table embeds as the zero vector. The
artifacts are run in process by their own runtimes, past every id check of ours, on negative ids,
ids past their own table but inside the fused table, ids past the whole fused table and int64's
extremes; on CUDA too where a GPU is visible (no device-side assert)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.oov_ids import bounds, hostile_batch, oov_values
from tritonstack import recsys
from tritonstack.export.formats import ExportOptions, exporter
from tritonstack.export.verify import tolerances
from tritonstack.formats import DEFAULT_FORMATS, Artifact, Format
from tritonstack.recsys.layers import FusedEmbedding
from tritonstack.runtimes.runners import OnnxRuntimeRunner, Runner, TorchRunner, TorchScriptRunner
from tritonstack.spec import Array, ModelSpec

VOCAB = (3, 5, 2)


def test_oov_ids_embed_as_zero_and_valid_ids_read_their_own_row() -> None:
    torch.manual_seed(0)
    emb = FusedEmbedding(VOCAB, 4)
    for column in range(len(VOCAB)):
        for value in oov_values(VOCAB, column):
            ids = torch.tensor([[2, 4, 1], [0, 0, 0]])
            ids[0, column] = value
            out = emb(ids)
            assert torch.equal(out[0, column], torch.zeros(4)), (column, value)
            rows = emb.embedding.weight[torch.tensor([[2, 3 + 4, 8 + 1], [0, 3, 8]])]
            keep = [c for c in range(len(VOCAB)) if c != column]
            assert torch.equal(out[0, keep], rows[0, keep]) and torch.equal(out[1], rows[1])


def test_existing_checkpoints_load_unchanged() -> None:
    """The rule adds buffers that are not saved: a state dict has the same keys as before."""
    assert set(FusedEmbedding(VOCAB, 4).state_dict()) == {"embedding.weight"}


def same_row_for_every_oov_kind(out: Array, spec: ModelSpec, fp16: bool = False) -> None:
    """Every kind of out-of-range id at one position gives one answer (up to the rounding of
    batched kernels, which may differ by row): they are treated alike."""
    atol, rtol = tolerances(fp16)
    row = 1
    for tensor in (t for t in spec.inputs if t.high is not None):
        kinds = len(oov_values(bounds(tensor), 0))
        for _ in bounds(tensor):
            same = np.repeat(out[row : row + 1], kinds, 0)
            np.testing.assert_allclose(out[row : row + kinds], same, atol=atol / 100, rtol=rtol / 100)
            row += kinds


@pytest.fixture(scope="module", params=recsys.ARCHITECTURES)
def model(request: pytest.FixtureRequest) -> tuple[nn.Module, ModelSpec]:
    arch = recsys.get_architecture(request.param)
    config = arch.preset("tiny")
    torch.manual_seed(0)
    return arch.build(config).eval(), arch.spec(config, max_batch_size=512)


def test_every_oov_kind_gets_the_same_answer_in_eager_pytorch(model: tuple[nn.Module, ModelSpec]) -> None:
    module, spec = model
    out = TorchRunner(module, spec).infer(hostile_batch(spec))
    for value in out.values():
        assert np.isfinite(value).all()
        same_row_for_every_oov_kind(value, spec)


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def artifact_runner(artifact: Artifact, device: str) -> Runner:
    if artifact.format is Format.ONNX:
        if device == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                pytest.skip("this onnxruntime has no CUDA provider")
        return OnnxRuntimeRunner(artifact.path, artifact.spec, device=device)
    return TorchScriptRunner(artifact.path, artifact.spec, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("fmt", DEFAULT_FORMATS)
def test_artifacts_answer_oov_ids_as_eager_pytorch(
    model: tuple[nn.Module, ModelSpec], fmt: Format, fp16: bool, device: str, tmp_path: Path
) -> None:
    module, spec = model
    artifact = exporter(fmt)(module, spec, tmp_path, ExportOptions(fp16=fp16))
    feeds = hostile_batch(spec)
    got = artifact_runner(artifact, device).infer(feeds)
    want = TorchRunner(module, spec).infer(feeds)
    atol, rtol = tolerances(fp16)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, atol=atol, rtol=rtol)
        same_row_for_every_oov_kind(got[name], spec, fp16)
    if device == "cuda":  # a device-side assert would fail every later call in this process
        torch.cuda.synchronize()
        assert torch.ones(1, device="cuda").item() == 1.0
