"""Adaptive latent chain of thought (family "adaptive_cot": token level, with a halting router).

Each token t gets up to l_max latent steps on a (token, step) grid (`ltm.ponder.grid`): slot
(t, k) reads slot (t', k') iff t' <= t and k' <= k, every slot of token t at position id t.
Level 0 is the token embeddings (the vanilla decoder); the input of level k is level k-1's final
hidden state at the same token. Because level k only reads levels <= k, a whole level is computed
exactly for all tokens in one decoder pass over a KV cache that holds the lower levels: l_max + 1
passes in all. A router (`ltm.ponder.router`) gives a continue probability c_{t,k} per step; the
output state is the exit-mass-weighted mixture of the step states, decoded by the tied head.

Pruning: a step whose reach r_{t,k} falls below `prune_threshold` is skipped, in training and at
inference alike; its exit mass goes to the token's last computed step. KV reuse for halted
tokens: the keys/values a halted token computed stay in the cache and every later level and
token reads them; its skipped slots are masked out (not copied from its last level, which would
count that slot twice in the softmax). Skipping is real: a level with no active token is not run
at all, and a partly active level runs its active slots only (`ltm.ponder.grid`): they are
gathered, flattened over the batch, for the token-wise work (projections, MLP, norms); for
attention they are laid out per row, active tokens first, on N = the most active tokens of any row
(shorter rows pad with slots written to the cache as invalid), with their own position ids,
against the cache of the lower levels; their states are scattered back to their tokens (zero at
skipped slots). Training and prompt passes thus cost about 1 + computed steps per token of
vanilla, plus the attention over the longer grid cache; a decode step (T = 1) runs only the levels
some row still needs. `gather=False` runs partly active levels in full with the skipped slots
masked: the reference the packed path equals. Sliding windows apply to token positions.

As a Pyro program (the degenerate-prior special case):

* prior: `ContextDelta`, the step states are deterministic functions of their context, written as
  `pyro.deterministic("latent_{k}", ...)` (k = 1 .. l_max) and the halting distribution as
  `pyro.deterministic("halt", ...)`;
* guide: empty (registry name "none"): the KL is zero; the ELBO is minus the summed token
  cross-entropy, minus (in training mode only) the router loss, which enters as
  `pyro.factor("router", -loss)`;
* budget knobs: l_max (`max_steps`), the continuation penalty lambda (`halt_lambda`), the accuracy
  weight beta (`halt_beta`) and the pruning threshold (`prune_threshold`).

After every forward `mean_steps` holds the mean expected number of latent steps per token
(sum_{k>=1} r_{t,k}) and `computed_steps` the mean number actually computed per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
import torch.nn.functional as F

from ltm.core.errors import ConfigError
from ltm.core.loss_mask import split_block
from ltm.core.sites import IGNORE_INDEX, SEQUENCE_PLATE, TOKEN_SITE
from ltm.models.decoder import Decoder
from ltm.models.likelihood import TokenSequence
from ltm.ponder.grad_cache import ConcatKVCache
from ltm.ponder.grid import GridCache, pack_index, packed_hidden_states
from ltm.ponder.router import Router, exit_weights, router_loss
from ltm.ponder.token_level import TokenLevelFamily

LATENT_SITE_FMT = "latent_{}"  # state of latent step k >= 1 (B, T, D)
HALT_SITE = "halt"  # exit masses over the steps (B, T, K)
ROUTER_SITE = "router"  # the router loss factor


@dataclass
class AdaptiveCoTOptions:
    """The `adaptive_cot` config section.

    Attributes:
        max_steps: l_max, the most latent steps per token.
        halt_lambda: lambda, the router's penalty per expected latent step.
        halt_beta: beta, the weight of the router's accuracy term.
        prune_threshold: Skip steps whose reach is below this (0: never skip).
    """

    max_steps: int = 3
    halt_lambda: float = 0.01
    halt_beta: float = 1.0
    prune_threshold: float = 0.0


@dataclass
class CoTOutput:
    """One run over a chunk of tokens.

    Attributes:
        logits: Next-token logits of the mixed state (B, T, V).
        states: Step states h_{., k} of the computed levels, each (B, T, D), zero where skipped.
        cont_logits: Continue logits of the steps with a decision (levels < l_max), each (B, T).
        active: Whether step k was computed for each token (B, T, K).
        reach: r_{t,k}, zero where skipped (B, T, K).
        weights: Exit masses (B, T, K), summing to 1 over k.
    """

    logits: torch.Tensor
    states: list[torch.Tensor]
    cont_logits: list[torch.Tensor]
    active: torch.Tensor
    reach: torch.Tensor
    weights: torch.Tensor

    @property
    def steps(self) -> torch.Tensor:
        """Expected latent steps per token (B, T)."""
        return self.reach[..., 1:].sum(-1)

    @property
    def computed(self) -> torch.Tensor:
        """Computed latent steps per token (B, T)."""
        return self.active[..., 1:].sum(-1).to(self.reach.dtype)


@dataclass
class CoTState:
    """Decoding state: the grid cache, the next token position and the steps spent so far.

    Attributes:
        cache: Keys/values and slot metadata of every computed slot.
        position: Tokens consumed so far (the position id of the next token).
        steps: Latent steps computed so far, summed over rows and tokens.
        tokens: Row-tokens consumed so far.
    """

    cache: GridCache
    position: int
    steps: float = 0.0
    tokens: int = 0

    @property
    def mean_steps(self) -> float:
        """Computed latent steps per token over everything this state decoded."""
        return self.steps / max(self.tokens, 1)


class AdaptiveLatentCoT(TokenLevelFamily):
    """Adaptive latent CoT over a plain decoder (no cross-attention).

    Args:
        decoder: A `Decoder` with n_latent == 0.
        max_steps: l_max, the most latent steps per token (levels 1 .. l_max).
        halt_lambda: lambda, the router's penalty per expected latent step.
        halt_beta: beta, the weight of the router's accuracy term.
        prune_threshold: Skip steps whose reach is below this (0: never skip).
        router_loss: Add the router loss to the Pyro model as a factor (off: pure cross-entropy).
        gather: Run a partly active level over its active slots only (off: in full, skipped slots
            masked; same results, the reference).
    """

    name = "adaptive_cot"
    Options = AdaptiveCoTOptions
    recomputes_blocks = False  # its training pass writes each level's keys to a ConcatKVCache

    def __init__(self, decoder: Decoder, max_steps: int = 3, halt_lambda: float = 0.01,
                 halt_beta: float = 1.0, prune_threshold: float = 0.0, router_loss: bool = True,
                 gather: bool = True):
        super().__init__(decoder)
        if max_steps < 0 or halt_lambda < 0 or halt_beta < 0 or not 0 <= prune_threshold <= 1:
            raise ConfigError("AdaptiveLatentCoT: need max_steps >= 0, halt_lambda >= 0, halt_beta >= 0 "
                              f"and 0 <= prune_threshold <= 1; got {max_steps}, {halt_lambda}, "
                              f"{halt_beta}, {prune_threshold}.")
        self.router = Router(decoder.cfg.d_model)
        self.max_steps, self.halt_lambda, self.halt_beta = max_steps, halt_lambda, halt_beta
        self.prune_threshold, self.use_router_loss, self.gather = prune_threshold, router_loss, gather
        self.mean_steps = 0.0  # expected latent steps per token, last forward
        self.computed_steps = 0.0  # computed latent steps per token, last forward
        self.last_router_loss: torch.Tensor | None = None  # (B,), last `model` call
        self.last_cross_entropy: torch.Tensor | None = None  # (B,), last `model` call

    @classmethod
    def fsdp_refusal(cls, options: AdaptiveCoTOptions) -> str | None:
        if options.prune_threshold > 0:
            return (f"--adaptive-cot.prune-threshold {options.prune_threshold} skips the steps of "
                    f"tokens whose reach falls below it, so each process runs its own levels and "
                    f"the sharded blocks' all-gathers would wait forever; set it to 0 or train "
                    f"without --fsdp (plain torchrun)")
        return None

    @property
    def cost_per_token(self) -> float:
        """The decode FLOP multiplier over vanilla: 1 + computed latent steps per token (last run)."""
        return 1.0 + self.computed_steps

    def metrics(self) -> dict[str, float]:
        return {"mean_latent_steps": self.mean_steps}

    def _new_cache(self, batch: int, max_tokens: int | None = None) -> GridCache:
        ref = self.decoder.embed.weight
        if torch.is_grad_enabled():
            kv = ConcatKVCache(self.decoder.cfg.n_layer)
        else:
            slots = (self.max_steps + 1) * (max_tokens or self.decoder.cfg.block_size)
            kv = self.decoder.new_cache(batch, slots)
        return GridCache(kv, batch, ref.device)

    def run(self, inputs: torch.Tensor, cache: GridCache | None = None, start: int = 0,
            record: bool = False) -> CoTOutput:
        """Compute the grid for a chunk of tokens, level by level.

        Args:
            inputs: Token ids (B, T) at positions start .. start+T-1.
            cache: Grid cache holding the earlier tokens' slots (appended to); None: a fresh one.
            start: Position of the first token of the chunk.
            record: Record the step states and halting masses as Pyro deterministic sites.
        """
        dec = self.decoder
        B, T = inputs.shape
        cache = self._new_cache(B, start + T) if cache is None else cache
        positions = torch.arange(start, start + T, device=inputs.device)  # (T,)
        x = dec.embed(inputs)  # (B, T, D)
        reach = x.new_ones(B, T)  # (B, T): r_{t,0} = 1
        states, conts, actives, reaches = [], [], [], []
        for k in range(self.max_steps + 1):
            active = reach >= self.prune_threshold if k else torch.ones_like(reach, dtype=torch.bool)
            if k and not bool(active.any()):
                break
            h = self._level(x, positions, k, active, cache)  # (B, T, D)
            states.append(h)
            actives.append(active)
            reaches.append(reach * active)
            if k == self.max_steps:
                break
            logit = self.router(h)  # (B, T)
            conts.append(logit)
            reach = reach * torch.sigmoid(logit) * active  # (B, T): r_{t,k+1}
            x = h
        active = torch.stack(actives, -1)  # (B, T, K)
        reach = torch.stack(reaches, -1)  # (B, T, K)
        weights = exit_weights(reach)  # (B, T, K)
        mixed = (torch.stack(states, -1) * weights[:, :, None]).sum(-1)  # (B, T, D)
        out = CoTOutput(dec.logits(mixed), states, conts, active, reach, weights)
        self.mean_steps = float(out.steps.detach().mean())
        self.computed_steps = float(out.computed.detach().mean())
        if record:
            for k, h in enumerate(states[1:], start=1):
                pyro.deterministic(LATENT_SITE_FMT.format(k), h, event_dim=2)
            pyro.deterministic(HALT_SITE, weights, event_dim=2)
        return out

    def _level(self, x: torch.Tensor, positions: torch.Tensor, level: int, active: torch.Tensor,
               cache: GridCache) -> torch.Tensor:
        """States (B, T, D) of one level, zero at skipped slots; only active slots run when gathering.

        Args:
            x: The level's inputs (B, T, D).
            positions: Token positions (T,).
            level: Level k.
            active: Which tokens compute this level (B, T).
            cache: Grid cache of the lower levels and earlier tokens (appended to).
        """
        dec, window, full = self.decoder, self.decoder.cfg.window, bool(active.all())
        if full or not self.gather:
            first = cache.kv.length == 0  # level 0 of a fresh cache: plain causal, the fast path
            mask = cache.extend(positions, level, active, window)  # (B, 1, T, S)
            h = dec.hidden_states(embeds=x, positions=positions, cache=cache.kv,
                                  attn_mask=None if first else mask)  # (B, T, D)
            return h if full else h.masked_fill(~active[..., None], 0.0)  # (B, T, D)
        index = pack_index(active)  # (B, N)
        slots, pos = active.gather(1, index), positions[index]  # (B, N) each; slots False on padding
        mask = cache.extend(pos, level, slots, window)  # (B, 1, N, S)
        h = packed_hidden_states(dec, x[active], slots, pos, cache.kv, mask)  # (n, D)
        return h.new_zeros(x.shape).index_put(active.nonzero(as_tuple=True), h)  # (B, T, D)

    def router_loss(self, out: CoTOutput, targets: torch.Tensor) -> torch.Tensor:
        """The correctness-aware router loss (B,) of a run against its next tokens (B, T)."""
        correct = [self._correct(h, out.active[..., k], targets)
                   for k, h in enumerate(out.states[:len(out.cont_logits)])]  # (B, T) each
        stops = [-c for c in out.cont_logits]  # (B, T) each: logit of 1 - c
        return router_loss(stops, correct, out.active, out.reach, targets != IGNORE_INDEX,
                           self.halt_lambda, self.halt_beta)

    @torch.no_grad()
    def _correct(self, h: torch.Tensor, active: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """p (B, T) of the next token under one level's own read-out, at its active slots only (0
        elsewhere), stop-gradient.

        Args:
            h: The level's states (B, T, D).
            active: Slots that computed the level (B, T).
            targets: Next tokens (B, T).
        """
        logits = self.decoder.logits(h[active])  # (n, V)
        ce = F.cross_entropy(logits, targets[active], reduction="none", ignore_index=IGNORE_INDEX)  # (n,)
        return ce.new_zeros(targets.shape).masked_scatter(active, torch.exp(-ce))  # (B, T)

    def model(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pyro model over blocks `tokens` (B, T+1): predicts tokens[:, 1:].

        In training mode adds `pyro.factor("router", -router_loss)` (unless built with
        `router_loss=False`), so the slow step minimises cross-entropy + router loss; in eval mode
        the factor is left out and the ELBO is the pure cross-entropy (validation perplexities stay
        comparable across families). The pure cross-entropy per sequence is left in
        `last_cross_entropy`, the router loss in `last_router_loss`.

        Returns:
            The logits (B, T, V).
        """
        inputs, targets = split_block(tokens)  # (B, T) each
        with pyro.plate(SEQUENCE_PLATE, tokens.shape[0]):
            out = self.run(inputs, record=True)
            dist = TokenSequence(out.logits)
            pyro.sample(TOKEN_SITE, dist, obs=targets)
            self.last_cross_entropy = -dist.log_prob(targets).detach()  # (B,)
            if self.use_router_loss and self.training:
                loss = self.router_loss(out, targets)  # (B,)
                self.last_router_loss = loss.detach()
                pyro.factor(ROUTER_SITE, -loss)
        return out.logits

    def cross_entropy(self, tokens: torch.Tensor) -> torch.Tensor:
        """Summed next-token cross-entropy per sequence (B,) of blocks `tokens` (B, T+1)."""
        inputs, targets = split_block(tokens)  # (B, T) each
        return -TokenSequence(self.run(inputs).logits).log_prob(targets)

    def train_logits(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.run(inputs).logits, None  # (B, T, V)

    def exact_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) over the whole prefix, all tokens of a level in one pass (the reference)."""
        return self.run(tokens).logits

    @torch.no_grad()
    def start_decode(self, tokens: torch.Tensor, max_len: int | None = None
                     ) -> tuple[torch.Tensor, CoTState]:
        """Run the prompt `tokens` (B, T) level by level into a fresh grid cache.

        Args:
            tokens: Prompt ids (B, T), T >= 1.
            max_len: Most tokens (prompt + new) the state must hold; default: the block size.

        Returns:
            The next-token logits after the prompt (B, V) and the decoding state.
        """
        cache = self._new_cache(tokens.shape[0], max_len)
        out = self.run(tokens, cache)
        state = CoTState(cache, tokens.shape[1], float(out.computed.sum()), tokens.numel())
        return out.logits[:, -1], state

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, state: CoTState) -> tuple[torch.Tensor, CoTState]:
        """Append one token per row (B,): its level 0 and up to l_max latent steps, one slot each.

        Returns:
            The next-token logits (B, V) and the (updated in place) state.
        """
        out = self.run(token[:, None], state.cache, start=state.position)
        state.position += 1
        state.steps += float(out.computed.sum())
        state.tokens += token.shape[0]
        return out.logits[:, 0], state
