"""A pretrained checkpoint that cannot be used gets one sentence naming it, and nothing is written."""

from __future__ import annotations

import json
import shutil

import pytest

from ltm import train
from ltm.core.errors import ConfigError
from tests.cli_helpers import shared_paths
from tests.pretrained.conftest import byte_bpe


@pytest.fixture
def start(tmp_path_factory, tmp_path, capsys):
    """Run `python -m ltm.train --init-from-hf SOURCE ...` in-process: (exit status, stderr), and
    check that the run directory was left empty."""
    corpus, cache = shared_paths(tmp_path_factory)
    out = tmp_path / "run"

    def run(source, *flags: str) -> tuple[int, str]:
        status = train.main(["--init-from-hf", str(source), "--dataset", str(corpus), "--cache-dir",
                             str(cache), "--out-dir", str(out), "--block-size", "32", "--max-steps", "1",
                             "--no-progress", *flags])
        err = capsys.readouterr().err.strip()
        assert not out.exists() or not any(out.iterdir()), "a refused start wrote files"
        return status, err

    return run


def copy(hf_checkpoints, tmp_path, kind: str = "llama_gqa_tied"):
    folder = tmp_path / "copy"
    shutil.copytree(hf_checkpoints[kind], folder)
    return folder


def edit_config(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def one_error(status: int, err: str) -> str:
    assert status == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_unsupported_architecture(start, hf_checkpoints, tmp_path):
    folder = copy(hf_checkpoints, tmp_path)
    edit_config(folder, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    err = one_error(*start(folder))
    assert "GPT2LMHeadModel" in err and "LlamaForCausalLM, Qwen2ForCausalLM" in err


def test_missing_shard(start, hf_checkpoints, tmp_path):
    folder = copy(hf_checkpoints, tmp_path)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                                            "model.norm.weight": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    err = one_error(*start(folder))
    assert "model-00002-of-00002.safetensors" in err and "download" in err


def test_partial_shard(start, hf_checkpoints, tmp_path):
    folder = copy(hf_checkpoints, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    err = one_error(*start(folder))
    assert "model.safetensors" in err and "truncated" in err


def test_tokenizer_larger_than_the_embedding(start, hf_checkpoints, tmp_path):
    folder = copy(hf_checkpoints, tmp_path)
    byte_bpe(400).save(str(folder / "tokenizer.json"))
    err = one_error(*start(folder))
    assert "tokenizer" in err and "300 rows" in err


def test_hub_id_without_network(start, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = one_error(*start("ltm-tests/no-such-model"))
    assert ("'ltm-tests/no-such-model' is not found locally and the hub cannot be reached; download it "
            "with `huggingface-cli download ltm-tests/no-such-model --local-dir DIR` and pass DIR") in err


def test_family_option_that_does_not_fit_the_shape(start, hf_checkpoints):
    err = one_error(*start(hf_checkpoints["llama_gqa_tied"], "--model", "ltm", "--ltm.n-latent", "3"))
    assert "model 'ltm' cannot take the shape" in err and "n_latent=3" in err


def test_shape_flag_that_contradicts_the_checkpoint(start, hf_checkpoints):
    err = one_error(*start(hf_checkpoints["llama_gqa_tied"], "--d-model", "32"))
    assert "--d-model 32 does not fit" in err and "d_model is 64" in err


def test_block_size_beyond_the_checkpoints_positions(start, hf_checkpoints, tmp_path):
    folder = copy(hf_checkpoints, tmp_path)
    edit_config(folder, max_position_embeddings=16)
    err = one_error(*start(folder))
    assert "block_size 32 exceeds the 16 positions" in err


def test_an_exports_planted_prior_runs_nothing_from_hf(hf_checkpoints, tmp_path, monkeypatch):
    """An export's config.json naming a `module:Class` prior is refused by `from_hf` before any import
    (the rule checkpoints follow); trusted, the module is imported and the class checked."""
    from ltm.core.errors import UntrustedCodeError
    from ltm.models import LatentThoughtModel, from_hf
    from ltm.models.pretrained import EXPORT_KEY

    folder = copy(hf_checkpoints, tmp_path)
    edit_config(folder, **{EXPORT_KEY: {"model": "ltm", "options": {"n_latent": 2, "d_latent": 8},
                                        "prior": "planted_prior:Prior"}})
    marker = tmp_path / "ran"
    (tmp_path / "planted_prior.py").write_text(f"open({str(marker)!r}, 'w').close()\nPrior = int\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UntrustedCodeError, match="planted_prior:Prior"):
        from_hf(folder, LatentThoughtModel)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="not a subclass"):  # trusted: imported, then refused by type
        from_hf(folder, LatentThoughtModel, trust_code=True)
    assert marker.exists()
