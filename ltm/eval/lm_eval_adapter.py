"""Drive ltm checkpoints from the standard evaluation harness (EleutherAI `lm-eval` >= 0.4).

Importing this module registers the model class `LTMHarnessModel` under the name "ltm":

    import lm_eval
    import ltm.eval.lm_eval_adapter  # noqa: F401 (registers "ltm")
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="ltm", model_args="pretrained=runs/ltm-default,inner_steps=4,num_samples=8",
        tasks=["ltm_lastword"], task_manager=TaskManager(include_path="tests/eval/lm_eval_task"))

or from a shell, with the harness's own flags (this module forwards them after registering):

    python -m ltm.eval.lm_eval_adapter run --model ltm --model_args pretrained=runs/ltm-default \\
        --tasks ltm_lastword --include_path tests/eval/lm_eval_task

What each request type means for a latent model (every number carries the protocol of
`ltm.eval.scoring`; deterministic families, whose guide has no latent site, get exact values):

- `loglikelihood` (context, continuation) -> (log p, is_greedy): `scoring.continuation_logprob`,
  i.e. q(z | context) fitted with K inner steps, the continuation scored as
  log mean_s p(c | context, z_s) over S fresh draws (prefix-predictive; the same numbers as
  `zero_shot.lambada`); is_greedy = argmax of that mixture reproduces every continuation token.
- `loglikelihood_rolling` (text,) -> log p: with `rolling="bound"` (default) the text, after BOS,
  is cut into windows of block_size + 1 tokens, each overlapping the previous by one token, and
  each window is scored by `scoring.sequence_logprob`, the importance-weighted bound with S
  samples after fitting q on the window (a lower bound on log p in expectation; each window
  conditions on its first token only and has its own z, as in training). With
  `rolling="predictive"` the harness's own rolling windows (maximal context, every token scored
  once) are scored by `continuation_logprob` (prefix-predictive, not a bound; for a
  deterministic family this is exactly the harness's usual rolling log-likelihood).
- `generate_until` (context, gen_kwargs) -> text: `ltm.sampling.sampler.generate`, greedy (temperature
  0) unless the task asks for `do_sample`, z drawn from q(z | context) fitted with K steps,
  stopped at EOS, at `max_gen_toks`, or at the first of the `until` strings (cut off).

Contexts longer than the model's block are truncated from the left. Request i of doc d uses the
seed `seed + d` (the doc index), so a number does not depend on the order, batching or `limit`
of the run, and equals `ltm.eval.zero_shot` called with the same seed.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ltm.core.errors import ConfigError

try:
    import lm_eval.models  # noqa: F401 (registers the built-in models' placeholders first)
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as err:  # the optional extra is not installed
    raise ImportError(f"ltm.eval.lm_eval_adapter needs the evaluation harness (lm-eval >= 0.4), which is not "
                      f"installed ({err}); install it with: pip install 'ltm[lm-eval]' (or pip install "
                      f"'lm-eval>=0.4').") from err

import torch

from ltm.data.tokenizer import decode, encode, special_ids
from ltm.eval.scoring import continuation_logprob, model_block_size, sequence_logprob
from ltm.sampling.sampler import generate
from ltm.sampling.settings import SamplingConfig
from ltm.training.checkpoint import load_checkpoint, load_guide, resolve_checkpoint

ROLLING_MODES = ("bound", "predictive")
DEFAULT_MAX_GEN_TOKS = 256


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _pick_device(device: str | None) -> torch.device:
    """`device`, default CPU; a CUDA device without CUDA (the harness CLI's default) falls back to CPU."""
    if device and str(device).startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"device {device!r} asked for but CUDA is not available; running on the CPU.",
                      stacklevel=3)
        return torch.device("cpu")
    return torch.device(device or "cpu")


@register_model("ltm")
class LTMHarnessModel(LM):
    """An ltm checkpoint (any family) as an `lm_eval` model; see the module docstring for protocols.

    Args:
        pretrained: A run directory (its latest step), a step directory, or a file inside one.
        inner_steps: Inner steps K fitting q(z | context) (default: the run's evaluation K).
        num_samples: Draws S from q per score (ignored by deterministic families).
        seed: Base seed; the request of doc d uses `seed + d`.
        rolling: "bound" (importance-weighted bound per window) or "predictive" (prefix-predictive
            over the harness's rolling windows) for `loglikelihood_rolling`.
        posterior_mean: In `generate_until`, decode with the mean of q instead of a draw.
        device: Where to run the model (default "cpu"; "cuda" without CUDA falls back to the CPU
            with a warning, as the harness's CLI asks for "cuda" by default).
        batch_size: Accepted for the harness's interface; requests are scored one at a time (each
            fits its own q), so the results do not depend on it.
        max_batch_size: Accepted and ignored, like `batch_size`.
        trust_code: Allow a checkpoint whose config names its model, prior or guide by a
            `module:Class` path, which loading imports (`trust_code=True` in `--model_args`).

    Raises:
        ConfigError: for num_samples < 1, inner_steps < 0 or an unknown rolling mode.
        ltm.core.errors.CheckpointError: for a checkpoint that cannot be loaded.
    """

    def __init__(self, pretrained: str | Path, inner_steps: int | None = None, num_samples: int = 8,
                 seed: int = 0, rolling: str = "bound", posterior_mean: bool = False,
                 device: str | None = None, batch_size: int | str | None = None,
                 max_batch_size: int | None = None, trust_code: bool | str = False) -> None:
        super().__init__()
        num_samples, seed = int(num_samples), int(seed)
        if num_samples < 1:
            raise ConfigError(f"num_samples S must be >= 1, got {num_samples}.")
        if rolling not in ROLLING_MODES:
            raise ConfigError(f"unknown rolling mode {rolling!r}; choose one of {ROLLING_MODES}.")
        self._device = _pick_device(device)
        step_dir = resolve_checkpoint(pretrained)  # once: model and guide come from the same step
        trust = _as_bool(trust_code)
        self.model, self.tokenizer, self.config = load_checkpoint(step_dir, self._device, trust)
        self.guide = load_guide(step_dir, self._device, self.model, trust)
        steps = self.config.eval_steps if inner_steps in (None, "") else int(inner_steps)
        self.inner = self.config.inner_config(steps)  # raises ValueError for K < 0
        self.num_samples, self.seed, self.rolling = num_samples, seed, rolling
        self.posterior_mean = _as_bool(posterior_mean)
        self.block_size = model_block_size(self.model)
        self.bos_id, self.eos_id, _ = special_ids(self.tokenizer)
        self.pretrained = str(pretrained)

    # -- helpers --------------------------------------------------------------------------------

    def tok_encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens)."""
        return encode(self.tokenizer, text)

    def _seed(self, request, index: int) -> int:
        doc_id = getattr(request, "doc_id", None)
        return self.seed + (index if doc_id is None else int(doc_id))

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(BOS + context ids, continuation ids); trailing spaces of the context move to the continuation."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        return encode(self.tokenizer, context, bos=True), self.tok_encode(continuation)

    def score(self, context: str, continuation: str, seed: int | None = None) -> tuple[float, bool]:
        """(log p(continuation | context) in nats, is_greedy) for one pair, as `loglikelihood` gives."""
        context_ids, continuation_ids = self._pair(context, continuation)
        return continuation_logprob(self.model, self.guide, context_ids, continuation_ids, self.inner,
                                    self.num_samples, self.seed if seed is None else seed)

    def rolling_logprob(self, text: str, seed: int | None = None) -> float:
        """log p(text | BOS) in nats by the `rolling` protocol (see the module docstring)."""
        seed = self.seed if seed is None else seed
        ids = self.tok_encode(text)
        if not ids:
            return 0.0
        T = self.block_size
        if self.rolling == "bound":
            tokens = [self.bos_id] + ids
            windows = [tokens[s:s + T + 1] for s in range(0, len(tokens) - 1, T)]  # overlap 1 token
            return sum(sequence_logprob(self.model, self.guide, w, self.inner, self.num_samples, seed + i)
                       for i, w in enumerate(windows))
        total = 0.0
        pairs = get_rolling_token_windows(ids, prefix_token=self.bos_id, max_seq_len=T, context_len=1)
        for i, (inputs, targets) in enumerate(map(make_disjoint_window, pairs)):
            # inputs (context) end one token before the first scored target
            lp, _ = continuation_logprob(self.model, self.guide, list(inputs), list(targets), self.inner,
                                         self.num_samples, seed + i, block_size=T)
            total += lp
        return total

    def generate_one(self, context: str, gen_kwargs: dict | None = None, seed: int | None = None,
                     first_row: int = 0) -> str:
        """The continuation text of `context`, cut at the first `until` string (see the module docstring)."""
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", DEFAULT_MAX_GEN_TOKS)))
        sample = _as_bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0) if sample else 0.0
        ids = encode(self.tokenizer, context, bos=True)
        T = self.block_size
        # leave room for the new tokens, but keep at least half the block (or the whole prompt) as context
        max_new = max(1, min(max_new, T - min(len(ids), T // 2)))
        ids = ids[-(T - max_new):]
        sampling = SamplingConfig(max_new_tokens=max_new, temperature=temperature,
                                  top_k=kwargs.get("top_k") if sample else None,
                                  top_p=kwargs.get("top_p") if sample else None,
                                  seed=self.seed if seed is None else seed, eos_id=self.eos_id)
        rows = generate(self.model, [ids], sampling=sampling, inner=self.inner,
                        guide=self.guide, first_row=first_row, posterior_mean=self.posterior_mean)
        text = decode(self.tokenizer, rows[0])
        for stop in until:
            if stop and stop in text:
                text = text[:text.index(stop)]
        return text

    # -- the harness's interface ----------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is_greedy) per request; see the module docstring."""
        out = []
        for i, req in enumerate(requests):
            context, continuation = req.args
            result = self.score(context, continuation, self._seed(req, i))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), result)
            out.append(result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """log p(text) per request by the `rolling` protocol; see the module docstring."""
        out = []
        for i, req in enumerate(requests):
            (text,) = req.args[:1]
            result = self.rolling_logprob(text, self._seed(req, i))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), result)
            out.append(result)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation text per request, cut at its `until` strings."""
        out = []
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args[0], (req.args[1] if len(req.args) > 1 else {})
            seed = self._seed(req, i)
            text = self.generate_one(context, gen_kwargs, seed)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    @property
    def tokenizer_name(self) -> str:
        return f"ltm:{self.pretrained}"


def main(argv: list[str] | None = None) -> None:
    """Run the harness's command line with the "ltm" model registered."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
