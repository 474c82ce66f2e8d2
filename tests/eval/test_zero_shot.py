"""Zero-shot scoring: continuation and sentence log-probs, and the sets end to end from local files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ltm.data.tokenizer import encode
from ltm.eval import scoring, zero_shot
from ltm.evaluate import main
from ltm.inference import InnerLoopConfig
from ltm.training.checkpoint import load_checkpoint, load_guide
from tests.cli.test_cli_evaluate import vanilla_run
from tests.cli_helpers import REPO, one_thread, shared_run  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = REPO.parent / "shared" / "data"
SETS = {"wikitext2": DATA / "wikitext2" / "test.txt", "lambada": DATA / "lambada" / "lambada_test.jsonl",
        "blimp": DATA / "blimp" / "anaphor_gender_agreement.jsonl.gz", "ptb": DATA / "ptb" / "ptb.test.txt"}


def _load(run):
    model, tokenizer, config = load_checkpoint(run)
    return model, load_guide(run), tokenizer, config


def test_vanilla_scores_are_exact(tmp_path_factory):
    model, guide, tok, _ = _load(vanilla_run(tmp_path_factory))
    ctx, cont = encode(tok, "the cat sat on", bos=True), encode(tok, " a mat")
    ids = torch.tensor([ctx + cont])  # (1, L)
    with torch.no_grad():
        logp = model.decoder(ids[:, :-1]).log_softmax(-1)[0]  # (L-1, V)
    exact = logp[torch.arange(len(ctx) - 1, ids.shape[1] - 1), ids[0, len(ctx):]].sum().item()
    inner = InnerLoopConfig(steps=3)
    lp, greedy = scoring.continuation_logprob(model, guide, ctx, cont, inner, num_samples=4)
    assert lp == pytest.approx(exact, abs=1e-4)
    assert greedy == bool((logp[len(ctx) - 1:].argmax(-1) == ids[0, len(ctx):]).all())
    whole = logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item()
    assert scoring.sequence_logprob(model, guide, ctx + cont, inner) == pytest.approx(whole, abs=1e-3)
    # its own greedy continuation is reproduced exactly
    best = [int(logp[len(ctx) - 1].argmax())]
    assert scoring.continuation_logprob(model, guide, ctx, best, inner)[1]
    # a context longer than the block: the exact log-prob of the window cut by hand from the left
    long_ctx = encode(tok, "the dog ran to the big red house and the cat sat " * 8, bos=True)
    T = model.decoder.cfg.block_size
    assert len(long_ctx) + len(cont) > T + 1
    window = torch.tensor([long_ctx[-(T + 1 - len(cont)):] + cont])  # (1, T+1)
    with torch.no_grad():
        logp = model.decoder(window[:, :-1]).log_softmax(-1)[0]  # (T, V)
    C = len(cont)
    exact = logp[torch.arange(T - C, T), window[0, -C:]].sum().item()
    lp, _ = scoring.continuation_logprob(model, guide, long_ctx, cont, inner)
    assert lp == pytest.approx(exact, abs=1e-4)


def test_latent_continuation_and_truncation(tmp_path_factory):
    model, guide, tok, config = _load(shared_run(tmp_path_factory))
    inner = config.inner_config(2)
    long_ctx = encode(tok, "the cat sat on a mat and the dog ran to the big red house " * 8, bos=True)
    assert len(long_ctx) > config.data.block_size  # truncated from the left to fit the block
    cont = encode(tok, " the small blue car")
    lp, greedy = scoring.continuation_logprob(model, guide, long_ctx, cont, inner, num_samples=4, seed=1)
    assert math.isfinite(lp) and lp < 0 and isinstance(greedy, bool)
    again = scoring.continuation_logprob(model, guide, long_ctx, cont, inner, num_samples=4, seed=1)
    assert again == (lp, greedy)  # seeded
    keep = config.data.block_size + 1 - len(cont)  # context tokens that fit beside the continuation
    by_hand = scoring.continuation_logprob(model, guide, long_ctx[-keep:], cont, inner, num_samples=4,
                                           seed=1)
    assert by_hand == (lp, greedy)  # the context was cut from the left ...
    right_cut = scoring.continuation_logprob(model, guide, long_ctx[:keep], cont, inner, num_samples=4,
                                             seed=1)
    assert right_cut[0] != pytest.approx(lp, abs=1e-6)  # ... and not from the right
    whole = scoring.sequence_logprob(model, guide, long_ctx, inner, num_samples=2, seed=5)
    tail = long_ctx[-(config.data.block_size + 1):]
    assert whole < 0 and whole == scoring.sequence_logprob(model, guide, tail, inner, num_samples=2, seed=5)
    with pytest.raises(ValueError, match="block_size"):
        scoring.continuation_logprob(model, guide, long_ctx[:2], long_ctx, inner)
    with pytest.raises(ValueError, match="num_samples S must be >= 1"):
        scoring.continuation_logprob(model, guide, long_ctx[:2], cont, inner, num_samples=0)
    with pytest.raises(ValueError, match="context is empty"):
        scoring.continuation_logprob(model, guide, [], cont, inner)


@pytest.mark.skipif(not all(p.exists() for p in SETS.values()),
                    reason=f"the shared evaluation data is absent ({DATA}: wikitext2, ptb, lambada, blimp)")
def test_sets_end_to_end_from_shared_files(capsys, tmp_path, tmp_path_factory):
    run, out = shared_run(tmp_path_factory), tmp_path / "zs.json"
    flags = [f"--{name}={path}" for name, path in SETS.items()]
    assert main(["--checkpoint", str(run), "--batches", "0", "--inner-steps", "2", "--limit", "4",
                 "--iwae-samples", "2", *flags, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "importance-weighted bound" in printed and "prefix-predictive" in printed
    row = json.loads(out.read_text())["zero_shot"][0]
    assert row["inner_steps"] == 2
    for name in ("wikitext2", "ptb"):
        assert row[name]["blocks"] == 4
        p, e = row[name]["prefix_predictive"], row[name]["fresh_noise_elbo"]
        assert math.isfinite(p["perplexity"]) and p["perplexity"] > 1 and "prefix" in p["label"]
        assert math.isfinite(e["perplexity_bound"]) and e["perplexity_bound"] > 1
    lam, bl = row["lambada"], row["blimp"]
    assert lam["n"] == 4 and 0 <= lam["accuracy"] <= 1 and lam["perplexity"] > 1
    assert bl["n"] == 4 and 0 <= bl["accuracy"] <= 1
    assert set(bl["per_phenomenon"]) == {"anaphor_gender_agreement"}


def test_blimp_folder_and_bad_files(tmp_path, tmp_path_factory):
    model, guide, tok, config = _load(vanilla_run(tmp_path_factory))
    inner = config.inner_config(0)
    pair = {"sentence_good": "the cat sat.", "sentence_bad": "cat the sat.", "UID": "toy"}
    folder = tmp_path / "blimp"
    folder.mkdir()
    (folder / "toy.jsonl").write_text("\n".join(json.dumps(pair) for _ in range(3)) + "\n")
    result = zero_shot.blimp(model, guide, tok, folder, inner, limit=2)
    assert result["n"] == 2 and result["accuracy"] in (0.0, 1.0) and list(result["per_phenomenon"]) == ["toy"]
    (folder / "toy.jsonl").write_text("sentence_good,sentence_bad\na,b\n")
    with pytest.raises(ValueError, match="is not JSON lines"):
        zero_shot.blimp(model, guide, tok, folder, inner)
    empty = tmp_path / "lambada.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        zero_shot.lambada(model, guide, tok, empty, inner)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zero_shot.wikitext_perplexity(model, guide, tok, Path(tmp_path / "nope.txt"), 32, inner)
