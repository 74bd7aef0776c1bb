"""The reference architectures: specs match forward(), configs round-trip, presets have the
seed registry's sizes, and the trainer's loss falls and its checkpoints rebuild the model."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tritonstack import recsys
from tritonstack.errors import InvalidArgument, UsageError
from tritonstack.recsys.config import Config
from tritonstack.recsys.dlrm import DLRM
from tritonstack.recsys.layers import FusedEmbedding
from tritonstack.recsys.train import TrainResult, auc, train
from tritonstack.recsys.two_tower import TwoTower, TwoTowerConfig
from tritonstack.spec import ModelSpec

# fp32 parameter bytes of each default preset, in MB (1e6 bytes); a new architecture needs a line.
DEFAULT_MB = {"two_tower": 45.0, "dlrm": 120.0, "dcn_v2": 85.0}
CHECKPOINT_KEYS = {"model_state_dict", "optimizer_state_dict", "epoch", "loss", "metrics", "config"}

archs = pytest.mark.parametrize("name", recsys.ARCHITECTURES)


def tiny(name: str) -> tuple[nn.Module, ModelSpec]:
    arch = recsys.get_architecture(name)
    config = arch.preset("tiny")
    torch.manual_seed(0)
    return arch.build(config), arch.spec(config)


def inputs(spec: ModelSpec, batch: int) -> tuple[torch.Tensor, ...]:
    feeds = spec.random_inputs(batch, seed=1)
    return tuple(torch.from_numpy(feeds[name]) for name in spec.input_names)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module", params=recsys.ARCHITECTURES)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    name = request.param
    out = tmp_path_factory.mktemp(name) / "nested" / f"{name}.pt"
    config = recsys.get_architecture(name).preset("tiny")
    return train(name, config, steps=40, batch_size=256, lr=1e-2, seed=0, checkpoint_path=out)


@archs
def test_forward_matches_spec(name: str) -> None:
    model, spec = tiny(name)
    assert spec.name == name and spec.output_names in (["score"], ["probability"])
    out = model(*inputs(spec, 5))
    assert out.dtype == torch.float32 and tuple(out.shape) == (5, *spec.outputs[0].shape)
    if spec.output_names == ["probability"]:
        assert bool(((out > 0) & (out < 1)).all())


@archs
def test_spec_inputs_are_forward_arguments(name: str) -> None:
    model, spec = tiny(name)
    assert list(inspect.signature(model.forward).parameters) == spec.input_names
    for tensor in spec.inputs:
        if tensor.is_integer:
            assert tensor.dtype == "int64" and isinstance(tensor.high, tuple)
            assert len(tensor.high) == tensor.shape[-1]


@archs
def test_spec_takes_name_and_batch_size(name: str) -> None:
    arch = recsys.get_architecture(name)
    spec = arch.spec(arch.preset("tiny"), model_name="custom", max_batch_size=8)
    assert (spec.name, spec.max_batch_size) == ("custom", 8)


@archs
def test_config_round_trips_through_json(name: str) -> None:
    arch = recsys.get_architecture(name)
    for preset in ("tiny", "default"):
        config = arch.preset(preset)
        assert arch.config_type.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@archs
def test_from_dict_rejects_unknown_missing_and_invalid_fields(name: str) -> None:
    """Each is an `InvalidArgument`: a `ValueError` to Python callers, a one-line usage error to the CLI."""
    arch = recsys.get_architecture(name)
    fields = arch.preset("tiny").to_dict()
    with pytest.raises(InvalidArgument, match="unknown keys.*'bogus'"):
        arch.config_type.from_dict({**fields, "bogus": 1})
    first = next(iter(fields))
    with pytest.raises(InvalidArgument, match=f"missing keys.*'{first}'"):
        arch.config_type.from_dict({k: v for k, v in fields.items() if k != first})
    for key, value in fields.items():
        bad = [0] if isinstance(value, list) else -1 if isinstance(value, int) else "x"
        with pytest.raises(InvalidArgument, match=key):
            arch.config_type.from_dict({**fields, key: bad})
    with pytest.raises(InvalidArgument, match="expected a JSON object of fields, got list"):
        arch.config_type.from_dict([fields])
    assert issubclass(InvalidArgument, ValueError) and issubclass(InvalidArgument, UsageError)


def test_config_from_fields_or_preset() -> None:
    arch = recsys.get_architecture("dlrm")
    assert arch.config(None, "tiny") == arch.preset("tiny")
    assert arch.config(arch.preset("tiny").to_dict(), "default") == arch.preset("tiny")  # fields win


@archs
def test_default_preset_has_the_registry_size(name: str) -> None:
    arch = recsys.get_architecture(name)
    with torch.device("meta"):  # counts parameters without allocating them
        model = arch.build(arch.preset("default"))
    assert 4 * n_params(model) / 1e6 == pytest.approx(DEFAULT_MB[name], rel=0.05)


@archs
def test_tiny_preset_is_small(name: str) -> None:
    assert 1_000 <= n_params(tiny(name)[0]) <= 100_000


def test_registry_errors_list_the_choices() -> None:
    with pytest.raises(UsageError, match="dlrm"):
        recsys.get_architecture("nope")
    with pytest.raises(UsageError, match="tiny"):
        recsys.get_architecture("dlrm").preset("huge")
    with pytest.raises(UsageError, match="DLRMConfig"):
        recsys.get_architecture("dlrm").build(recsys.get_architecture("dcn_v2").preset("tiny"))


def test_build_from_dict() -> None:
    config = recsys.get_architecture("dcn_v2").preset("tiny")
    model, spec = recsys.build_from_dict("dcn_v2", config.to_dict())
    assert spec.input_names == ["dense_features", "sparse_features"]
    assert spec.inputs[1].high == config.vocab_sizes
    assert tuple(model(*inputs(spec, 2)).shape) == (2, 1)


def test_fused_embedding_reads_each_columns_own_table() -> None:
    emb = FusedEmbedding((3, 5, 2), 4)
    ids = torch.tensor([[2, 4, 1], [0, 0, 0]])
    rows = emb.embedding.weight[torch.tensor([[2, 3 + 4, 8 + 1], [0, 3, 8]])]
    assert torch.equal(emb(ids), rows)


def test_dlrm_interaction_is_every_pair_once() -> None:
    model, spec = tiny("dlrm")
    assert isinstance(model, DLRM)
    dense, sparse = inputs(spec, 3)
    x = model.bottom(dense)
    vectors = [x, *model.embeddings(sparse).unbind(1)]
    pairs = [
        (vectors[i] * vectors[j]).sum(1) for i in range(len(vectors)) for j in range(i + 1, len(vectors))
    ]
    expected = torch.sigmoid(model.top(torch.cat([x, torch.stack(pairs, 1)], 1)))
    torch.testing.assert_close(model(dense, sparse), expected)


@pytest.mark.parametrize("normalize", [False, True])
def test_two_tower_score_is_dot_of_tower_embeddings(normalize: bool) -> None:
    arch = recsys.get_architecture("two_tower")
    config = TwoTowerConfig.from_dict({**arch.preset("tiny").to_dict(), "normalize": normalize})
    model, spec = arch.build(config), arch.spec(config)
    assert isinstance(model, TwoTower)
    users, items = inputs(spec, 4)
    u, v = model.user_embedding(users), model.item_embedding(items)
    torch.testing.assert_close(model(users, items), (u * v).sum(1, keepdim=True))
    if normalize:
        torch.testing.assert_close(u.norm(dim=1), torch.ones(4))


def test_training_lowers_the_loss(trained: TrainResult) -> None:
    assert len(trained.losses) == 40
    assert trained.last_loss < trained.first_loss
    assert trained.metrics["eval_auc"] > 0.6
    assert all(type(v) is float for v in trained.metrics.values())


def test_checkpoint_loads_safely_and_rebuilds_the_model(trained: TrainResult) -> None:
    checkpoint = torch.load(trained.checkpoint_path, weights_only=True)
    assert set(checkpoint) == CHECKPOINT_KEYS
    assert type(checkpoint["epoch"]) is int and type(checkpoint["loss"]) is float
    assert checkpoint["loss"] == trained.last_loss and checkpoint["metrics"] == trained.metrics
    assert set(checkpoint["config"]) == {"arch", "params"}
    assert [p.name for p in trained.checkpoint_path.parent.iterdir()] == [trained.checkpoint_path.name]

    arch = recsys.get_architecture(checkpoint["config"]["arch"])
    config: Config = arch.config_type.from_dict(checkpoint["config"]["params"])
    model, spec = arch.build(config), arch.spec(config)
    model.load_state_dict(checkpoint["model_state_dict"])
    again = arch.build(config)
    again.load_state_dict(torch.load(trained.checkpoint_path, weights_only=True)["model_state_dict"])
    args = inputs(spec, 6)
    torch.testing.assert_close(model(*args), again(*args), rtol=0, atol=0)
    assert not torch.equal(model(*args), arch.build(config)(*args))  # the trained weights were loaded


def test_training_is_deterministic(tmp_path: Path) -> None:
    config = recsys.get_architecture("dlrm").preset("tiny")
    runs = [
        train("dlrm", config, steps=3, batch_size=32, lr=1e-2, seed=7, checkpoint_path=tmp_path / f"{i}.pt")
        for i in range(2)
    ]
    assert runs[0].losses == runs[1].losses


def test_train_rejects_bad_arguments(tmp_path: Path) -> None:
    config = recsys.get_architecture("dlrm").preset("tiny")
    with pytest.raises(UsageError, match="steps"):
        train("dlrm", config, steps=0, batch_size=8, lr=1e-3, seed=0, checkpoint_path=tmp_path / "x.pt")
    with pytest.raises(UsageError, match="TwoTowerConfig"):
        train("two_tower", config, steps=1, batch_size=8, lr=1e-3, seed=0, checkpoint_path=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_auc() -> None:
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert auc(torch.tensor([0.1, 0.4, 0.2, 0.3]), labels) == 0.5
