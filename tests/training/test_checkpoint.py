"""Checkpoints: atomic step directories, tied weights once, and one clear error per kind of damage."""

from __future__ import annotations

import errno
import json
import random

import numpy as np
import pytest
import safetensors.torch
import torch
from tokenizers import Tokenizer, models
from torch import nn

from ltm.core.errors import CheckpointError, CheckpointSaveError
from ltm.training.checkpoint import (
    LATEST_FILE,
    MODEL_FILE,
    latest_checkpoint,
    load_trainer_state,
    load_weights,
    read_config,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    weight_tensors,
)
from ltm.training.config import TrainConfig


class Tied(nn.Module):
    """An embedding and an output head sharing one weight."""

    def __init__(self, d: int = 4):
        super().__init__()
        self.embed = nn.Embedding(5, d)
        self.head = nn.Linear(d, 5, bias=False)
        self.head.weight = self.embed.weight


def _tokenizer() -> Tokenizer:
    return Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))


def _save(run_dir, step, model, **kwargs):
    state = {"step": step, "rng": rng_state()}
    return save_checkpoint(run_dir, step, model, TrainConfig(), _tokenizer(), state,
                           extra={"vocab_size": 5}, **kwargs)


def test_tied_weights_saved_once_and_restored(tmp_path):
    model = Tied()
    tensors, aliases = weight_tensors(model)
    assert list(tensors) == ["embed.weight"] and aliases == {"head.weight": "embed.weight"}
    step_dir = _save(tmp_path, 1, model)
    fresh = Tied()
    load_weights(step_dir, fresh)
    assert torch.equal(fresh.head.weight, model.embed.weight)
    assert fresh.head.weight is fresh.embed.weight  # still tied after loading


def test_latest_marker_resolve_and_keep_last(tmp_path):
    model = Tied()
    for step in (1, 2, 3):
        _save(tmp_path, step, model, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000002", "step_000003"]
    assert (tmp_path / LATEST_FILE).read_text().strip() == "step_000003"
    assert resolve_checkpoint(tmp_path) == tmp_path / "step_000003"
    assert resolve_checkpoint(tmp_path / "step_000002") == tmp_path / "step_000002"
    assert resolve_checkpoint(tmp_path / "step_000002" / MODEL_FILE) == tmp_path / "step_000002"
    assert read_config(tmp_path / "step_000002") == TrainConfig()


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model = Tied()
    _save(tmp_path, 1, model)

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as half:
            half.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(CheckpointSaveError, match="no space left on device"):
        _save(tmp_path, 2, model)
    assert not (tmp_path / "step_000002").exists()
    assert not list(tmp_path.glob(".tmp-*"))
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000001"
    load_weights(tmp_path / "step_000001", Tied())


@pytest.mark.parametrize("damage, message", [
    ("truncate", "is truncated"), ("flip", "is corrupt"), ("delete", "is missing")])
def test_damaged_file_is_named(tmp_path, damage, message):
    step_dir = _save(tmp_path, 1, Tied())
    path = step_dir / MODEL_FILE
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=message) as err:
        load_weights(step_dir, Tied())
    assert str(path) in str(err.value)


def test_shape_mismatch_names_the_tensor(tmp_path):
    step_dir = _save(tmp_path, 1, Tied(d=4))
    with pytest.raises(CheckpointError, match=r"'embed.weight' has shape \(5, 4\) there but \(5, 8\) here"):
        load_weights(step_dir, Tied(d=8))


def test_missing_run_and_empty_dir(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path)


def test_incomplete_step_dir_is_refused(tmp_path):
    step_dir = _save(tmp_path, 1, Tied())
    (step_dir / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        read_config(step_dir)


def _rewrite_with_checksum(step_dir, name: str, text: str) -> None:
    """Replace a checkpoint file and record its new size and sha256, as another tool would."""
    import hashlib

    (step_dir / name).write_text(text)
    manifest = json.loads((step_dir / "manifest.json").read_text())
    data = text.encode()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (step_dir / "manifest.json").write_text(json.dumps(manifest))


def test_config_json_of_another_version_is_named(tmp_path):
    step_dir = _save(tmp_path, 1, Tied())
    _rewrite_with_checksum(step_dir, "config.json", '{"inner_step": 3}')  # passes the manifest check
    with pytest.raises(CheckpointError, match=r"unknown key 'inner_step' in .*config.json; did you mean "
                                              r"'inner_steps'\?.* written by another version of ltm"):
        read_config(step_dir)
    _rewrite_with_checksum(step_dir, "config.json", '{"inner_steps": 3, "lr": 0.01}')  # flat: still read
    assert (read_config(step_dir).inner.steps, read_config(step_dir).slow.lr) == (3, 0.01)
    _rewrite_with_checksum(step_dir, "config.json", "{not json")
    with pytest.raises(CheckpointError, match=r"config.json is not valid JSON"):
        read_config(step_dir)


def test_edited_config_json_fails_the_checksum(tmp_path):
    step_dir = _save(tmp_path, 1, Tied())
    (step_dir / "config.json").write_text('{"inner_steps": 3}')
    with pytest.raises(CheckpointError, match=r"config.json is (truncated or altered|corrupt)"):
        read_config(step_dir)


def test_rng_state_roundtrip_through_trainer_state(tmp_path):
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    step_dir = _save(tmp_path, 1, Tied())
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    set_rng_state(load_trainer_state(step_dir)["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]
