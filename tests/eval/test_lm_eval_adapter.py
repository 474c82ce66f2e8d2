"""The lm-eval adapter: the harness drives a tiny checkpoint offline on local task files and agrees
with ltm's own numbers (`ltm.eval.scoring`, `ltm.sampling.generate`) on the same examples."""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import REPO, one_thread, shared_run  # noqa: F401 (fixture)

needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None,
    reason="lm-eval is not installed (optional extra: pip install 'ltm[lm-eval]')")

TASK_DIR = REPO / "tests" / "eval" / "lm_eval_task"
DATA = TASK_DIR / "lastword.jsonl"
TASKS = ["ltm_lastword", "ltm_lastword_gen", "ltm_rolling"]
SAMPLES, SEED = 4, 3


def local_tasks(tmp: Path) -> Path:
    """The committed task YAMLs, with the data path made absolute and a private datasets cache."""
    out = tmp / "tasks"
    out.mkdir(exist_ok=True)
    rel = str(DATA.relative_to(REPO))
    for yaml in TASK_DIR.glob("*.yaml"):
        text = yaml.read_text()
        assert rel in text, f"{yaml.name} should read {rel}"
        text = text.replace(f"test: {rel}", f"test: {DATA}\n  cache_dir: {tmp / 'hf_datasets'}")
        (out / yaml.name).write_text(text)
    return out


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """(run dir, simple_evaluate results) of the three local tasks on the session's tiny checkpoint."""
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    import ltm.eval.lm_eval_adapter  # noqa: F401 (registers "ltm")

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    run = shared_run(tmp_path_factory)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tasks = local_tasks(tmp_path_factory.mktemp("lm_eval"))
        manager = TaskManager(include_path=str(tasks), include_defaults=False)  # no built-in index: fast
        results = lm_eval.simple_evaluate(
            model="ltm", model_args={"pretrained": str(run), "num_samples": SAMPLES, "seed": SEED},
            tasks=TASKS, task_manager=manager, bootstrap_iters=0, log_samples=True, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return run, results


def _own(run: Path):
    from ltm.training.checkpoint import load_checkpoint, load_guide

    model, tok, config = load_checkpoint(run)
    return model, load_guide(run), tok, config.inner_config(config.eval_steps)


@needs_lm_eval
def test_harness_runs_offline_on_local_tasks(harness):
    _, results = harness
    res = results["results"]
    assert set(TASKS) <= set(res)
    assert all(res[t]["sample_len"] == 10 for t in TASKS)
    assert 0.0 <= res["ltm_lastword"]["acc,none"] <= 1.0
    ppl = res["ltm_lastword"]["perplexity,none"]
    assert math.isfinite(ppl) and ppl > 1
    assert 0.0 <= res["ltm_lastword_gen"]["exact_match,first_word"] <= 1.0
    assert res["ltm_rolling"]["word_perplexity,none"] > 1


@needs_lm_eval
def test_loglikelihood_agrees_with_zero_shot(harness, one_thread):  # noqa: F811
    from ltm.data.tokenizer import encode
    from ltm.eval.zero_shot import continuation_logprob, lambada

    run, results = harness
    model, guide, tok, inner = _own(run)
    samples = results["samples"]["ltm_lastword"]
    assert len(samples) == 10
    for s in samples:
        context, word = s["doc"]["text"].rpartition(" ")[::2]
        lp, greedy = s["resps"][0][0]
        want = continuation_logprob(model, guide, encode(tok, context, bos=True), encode(tok, " " + word),
                                    inner, SAMPLES, SEED + s["doc_id"])
        assert lp == pytest.approx(want[0], abs=1e-5) and bool(greedy) == want[1]
    own = lambada(model, guide, tok, DATA, inner, num_samples=SAMPLES, seed=SEED)
    res = results["results"]["ltm_lastword"]
    assert own["n"] == 10
    assert res["acc,none"] == own["accuracy"]
    assert res["perplexity,none"] == pytest.approx(own["perplexity"], rel=1e-5)


@needs_lm_eval
def test_rolling_agrees_with_sequence_bound(harness, one_thread):  # noqa: F811
    from ltm.data.tokenizer import encode
    from ltm.eval.zero_shot import sequence_logprob

    run, results = harness
    model, guide, tok, inner = _own(run)
    T, windows = model.decoder.cfg.block_size, 0
    for s in results["samples"]["ltm_rolling"]:
        ids = encode(tok, s["doc"]["text"], bos=True)
        parts = [ids[i:i + T + 1] for i in range(0, len(ids) - 1, T)]  # T+1 tokens, overlapping by one
        assert sum(len(p) - 1 for p in parts) == len(ids) - 1  # every token after BOS scored once
        want = sum(sequence_logprob(model, guide, p, inner, SAMPLES, SEED + s["doc_id"] + i)
                   for i, p in enumerate(parts))
        assert s["resps"][0][0] == pytest.approx(want, abs=1e-4)
        windows += len(parts)
    assert windows > 10  # some texts span two windows


@needs_lm_eval
def test_generation_agrees_with_greedy_generate(harness, one_thread):  # noqa: F811
    from ltm.data.tokenizer import decode, encode, special_ids
    from ltm.sampling.sampler import generate
    from ltm.sampling.settings import SamplingConfig

    run, results = harness
    model, guide, tok, inner = _own(run)
    eos = special_ids(tok)[1]
    samples = results["samples"]["ltm_lastword_gen"]
    for s in samples:
        context = s["doc"]["text"].rpartition(" ")[0]
        cfg = SamplingConfig(max_new_tokens=3, temperature=0.0, seed=SEED + s["doc_id"], eos_id=eos)
        prompt = encode(tok, context, bos=True)[-(model.decoder.cfg.block_size - 3):]  # room for 3 new
        text = decode(tok, generate(model, [prompt], sampling=cfg, inner=inner, guide=guide)[0])
        text = text.split("\n")[0].split(".")[0]
        assert s["resps"][0][0] == text
    first_words = [s["filtered_resps"][0] for s in samples]  # one list per filtered instance
    assert first_words == [[(s["resps"][0][0].split() or [""])[0]] for s in samples]
    hits = [w[0].lower() == s["target"].lower() for w, s in zip(first_words, samples, strict=True)]
    assert results["results"]["ltm_lastword_gen"]["exact_match,first_word"] == pytest.approx(sum(hits) / 10)


@needs_lm_eval
def test_predictive_rolling_of_a_long_text_covers_every_token(harness, one_thread):  # noqa: F811
    from ltm.eval.lm_eval_adapter import LTMHarnessModel

    run, _ = harness
    lm = LTMHarnessModel(pretrained=str(run), num_samples=2, rolling="predictive")
    text = " ".join(DATA.read_text().split()[:60])  # longer than one 32-token block
    n = len(lm.tok_encode(text))
    assert n > lm.block_size
    lp = lm.rolling_logprob(text)
    assert math.isfinite(lp) and lp < 0
    bound = LTMHarnessModel(pretrained=str(run), num_samples=2).rolling_logprob(text)
    assert math.isfinite(bound) and bound < 0


@needs_lm_eval
def test_registered_and_bad_arguments(harness):
    from lm_eval.api.registry import get_model, model_registry

    from ltm.eval.lm_eval_adapter import LTMHarnessModel

    run, _ = harness
    assert get_model("ltm") is LTMHarnessModel
    assert "hf" in model_registry.keys()  # the built-in models stay available
    with pytest.raises(ValueError, match="num_samples"):
        LTMHarnessModel(pretrained=str(run), num_samples=0)
    with pytest.raises(ValueError, match="rolling"):
        LTMHarnessModel(pretrained=str(run), rolling="exact")
    with pytest.raises(ValueError, match="inner steps"):
        LTMHarnessModel(pretrained=str(run), inner_steps=-1)


def test_import_without_lm_eval_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "ltm.eval.lm_eval_adapter", raising=False)
    for name in [m for m in sys.modules if m == "lm_eval" or m.startswith("lm_eval.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'ltm\[lm-eval\]'"):
        importlib.import_module("ltm.eval.lm_eval_adapter")


@needs_lm_eval
def test_deterministic_family_scores_exactly(tmp_path, tmp_path_factory, one_thread):  # noqa: F811
    """A vanilla checkpoint: log-likelihoods, greedy flags and rolling scores equal the decoder's own."""
    import torch

    from ltm.data.tokenizer import decode, encode
    from ltm.eval.lm_eval_adapter import LTMHarnessModel
    from ltm.train import main as train_main
    from tests.cli_helpers import shared_paths, tiny_flags

    corpus, cache = shared_paths(tmp_path_factory)
    run = tmp_path / "vanilla"
    flags = tiny_flags(corpus, cache, run, max_steps=3, save_every=3, eval_every=3, lr_decay_steps=3)
    assert train_main([*flags, "--model", "vanilla"]) == 0
    lm = LTMHarnessModel(pretrained=str(run), num_samples=3)
    tok = lm.tokenizer

    def exact(ids: list[int], start: int) -> tuple[float, list[int]]:
        """Sum of log p(ids[t] | ids[:t]) for t >= start, and the argmax tokens there."""
        with torch.no_grad():
            logp = lm.model.full_logits(torch.tensor([ids[:-1]]))[0].log_softmax(-1)  # (L-1, V)
        target = torch.tensor(ids[start:])
        rows = logp[start - 1:]
        return float(rows.gather(-1, target[:, None]).sum()), rows.argmax(-1).tolist()

    greedy_seen = 0
    for line in DATA.read_text().splitlines()[:5]:
        text = line.split('"')[3]
        context, word = text.rpartition(" ")[::2]
        ctx = encode(tok, context, bos=True)
        # the scored word, then the model's own greedy next token as a second continuation
        with torch.no_grad():
            top = int(lm.model.full_logits(torch.tensor([ctx[-lm.block_size:]]))[0, -1].argmax())
        for continuation in (" " + word, decode(tok, [top], skip_special_tokens=False)):
            cont = encode(tok, continuation)
            kept = ctx[-(lm.block_size + 1 - len(cont)):]  # the context is cut from the left to fit
            want, argmax = exact(kept + cont, len(kept))
            lp, greedy = lm.score(context, continuation)
            assert lp == pytest.approx(want, abs=1e-4)
            assert greedy == (argmax == cont)
            greedy_seen += greedy
        ids = encode(tok, text, bos=True)
        if len(ids) <= lm.block_size + 1:  # one window: the bound is the exact log-likelihood
            assert lm.rolling_logprob(text) == pytest.approx(exact(ids, 1)[0], abs=1e-4)
    assert greedy_seen >= 5  # each greedy continuation is recognised as greedy
    text = " ".join(DATA.read_text().split('"')[3::4])  # all passages: several blocks long
    ids = encode(tok, text, bos=True)
    assert len(ids) > 2 * lm.block_size
    # "predictive": the harness's own rolling windows (as its HF model scores them), each token once
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    want, scored = 0.0, 0
    for inputs, preds in map(make_disjoint_window, get_rolling_token_windows(
            ids[1:], prefix_token=ids[0], max_seq_len=lm.block_size, context_len=1)):
        want += exact(list(inputs) + list(preds), len(inputs))[0]
        scored += len(preds)
    assert scored == len(ids) - 1
    predictive = LTMHarnessModel(pretrained=str(run), rolling="predictive").rolling_logprob(text)
    assert predictive == pytest.approx(want, abs=1e-3)
    # "bound": disjoint windows of block_size + 1 tokens, each conditioned on its first token only
    T = lm.block_size
    want = sum(exact(ids[i:i + T + 1], 1)[0] for i in range(0, len(ids) - 1, T))
    assert lm.rolling_logprob(text) == pytest.approx(want, abs=1e-3)
