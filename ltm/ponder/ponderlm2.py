"""PonderLM-2 (Zeng et al. 2025; "ponderlm2"): K thoughts per token, each the last hidden state fed back.

Slots are interleaved `[x1, z1_1..z1_K, x2, z2_1..z2_K, ...]`; every slot of token t has position
id t and attention is causal over slots. Thought z_t,k is the final-norm hidden state of the slot
before it (z_t,1 that of the token slot x_t), fed back as that slot's input embedding. The next
token x_{t+1} is predicted only from the last slot of token t (z_t,K's output).

Prior: `ContextDelta`, a Delta at the hidden state: z_t,k = h(slots before it) exactly, written as
the deterministic site "thoughts" (B, T, K, D). Guide: none (q = p; `EmptyGuide`, "none"); the KL is
zero and the ELBO is the summed cross-entropy. Budget knobs: thoughts per token K ((K+1)x decode
FLOPs) and, at training time, Jacobi sweeps J.

Training solves the thoughts in parallel by Jacobi iteration: an initial pass over the token
slots alone guesses every thought of token t as that pass's hidden state at t; each of J sweeps
runs the decoder once over all slots built from the current guesses and reads the new thoughts
off the hidden states; a final pass gives the logits. Gradients flow through every pass. The
exact solution is the sequential one (slot by slot); the iterate is exact once J >= T*K - 1.

Token embeddings are scaled to the hidden states' norm (a thought is the output of the decoder's
final RMSNorm, RMS 1 at initialisation). `embed_scale="published"` (default) follows the paper's
code: the embedding (tied with the output head) is initialised with std sqrt(2/(5D)) and the
token slot's input is `embed(x) * sqrt(2.5 D)`, RMS 1 at initialisation and free to grow.
`embed_scale="rmsnorm"` uses a learned RMSNorm (`token_norm`) instead, which pins the input RMS to
its gain; `embed_scale="none"` feeds the embedding as it is, as a pretrained decoder was trained
(`--init-from-hf`: its token slots then compute what the pretrained model did). J is drawn from
{2, 3} per training step, as in the paper's code.

`thought_skip=True` (not in the paper) adds the token's input to its thought slots, so the thought
slot, which alone predicts, does not get its token only through attention. Measurements of these
options are in the README (Model families) and results/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ltm.core.errors import ConfigError
from ltm.models.decoder import Decoder
from ltm.models.family import DecodeState
from ltm.models.layers import RMSNorm
from ltm.ponder.slots import interleave, slot_mask, slot_positions
from ltm.ponder.token_level import TokenLevelFamily

EMBED_SCALES = ("published", "rmsnorm", "none")


@dataclass
class PonderLM2Options:
    """The `ponderlm2` config section.

    Attributes:
        thoughts: Thoughts K per token ((K+1)x decode FLOPs).
        jacobi_sweeps: Jacobi sweeps J solving the thoughts at training time.
        max_jacobi_sweeps: If set, J is drawn uniformly from [jacobi_sweeps, this] per training step.
        embed_scale: Token-slot input scaling: "rmsnorm" (a learned RMSNorm of the embedding),
            "published" (embedding initialised with std sqrt(2/(5D)), multiplied by sqrt(2.5 D)),
            or "none" (the embedding as it is; for a start from a pretrained decoder).
        thought_skip: Add the token's input to each of its thought slots' inputs (not in the paper).
    """

    thoughts: int = 1
    jacobi_sweeps: int = 2
    max_jacobi_sweeps: int | None = 3
    embed_scale: str = "published"
    thought_skip: bool = False


class PonderLM2(TokenLevelFamily):
    """PonderLM-2 over a shared decoder.

    Args:
        decoder: A `Decoder` with n_latent == 0; block_size counts tokens (positions), not slots.
        thoughts: Thoughts K per token (0 = a vanilla decoder with scaled embeddings).
        jacobi_sweeps: Sweeps J of the training-time Jacobi solve (the lower end when drawn).
        max_jacobi_sweeps: If given, J is drawn uniformly from [jacobi_sweeps, max_jacobi_sweeps]
            at every training forward (global torch RNG). In eval mode the model scores with the
            exact (sequential) thoughts instead, so evaluation reports exact NLLs.
        embed_scale: "published" (embedding init std sqrt(2/(5D)), input embed(x) * sqrt(2.5 D)),
            "rmsnorm" (input `token_norm(embed(x))`, a learned RMSNorm), or "none" (input embed(x)
            as it is: a pretrained decoder's own token inputs); see the module notes.
        thought_skip: If True, each thought slot's input is its thought plus its token's input
            (not in the paper; shortens the early plateau, see the module notes).
        prefill: "jacobi" (sweeps until the thoughts stop changing by more than `prefill_tol`,
            at most P*K, then one pass fills the KV cache) or "sequential" (K+1 single-slot
            cached steps per prompt token; exact by construction).
        prefill_tol: Largest change of any thought coordinate that counts as converged.
    """

    name = "ponderlm2"
    Options = PonderLM2Options
    tied_head = True

    def __init__(self, decoder: Decoder, thoughts: int = 1, jacobi_sweeps: int = 2,
                 max_jacobi_sweeps: int | None = 3, embed_scale: str = "published",
                 thought_skip: bool = False, prefill: str = "jacobi", prefill_tol: float = 1e-6):
        super().__init__(decoder)
        if thoughts < 0 or jacobi_sweeps < 0:
            raise ConfigError(f"PonderLM2: thoughts and jacobi_sweeps must be >= 0, got {thoughts} "
                              f"and {jacobi_sweeps}.")
        if max_jacobi_sweeps is not None and max_jacobi_sweeps < jacobi_sweeps:
            raise ConfigError(f"PonderLM2: max_jacobi_sweeps ({max_jacobi_sweeps}) must be >= "
                              f"jacobi_sweeps ({jacobi_sweeps}).")
        if prefill not in ("jacobi", "sequential"):
            raise ConfigError(f"PonderLM2: prefill must be 'jacobi' or 'sequential', got '{prefill}'.")
        self.thoughts, self.jacobi_sweeps, self.max_jacobi_sweeps = thoughts, jacobi_sweeps, max_jacobi_sweeps
        self.prefill_mode, self.prefill_tol = prefill, prefill_tol
        self.slots_per_token = thoughts + 1
        if embed_scale not in EMBED_SCALES:
            raise ConfigError(f"PonderLM2: embed_scale must be one of {', '.join(EMBED_SCALES)}, got "
                              f"'{embed_scale}'.")
        self.embed_scale, self.thought_skip = embed_scale, thought_skip
        D = decoder.cfg.d_model
        self.token_norm = RMSNorm(D, decoder.cfg.norm_eps) if embed_scale == "rmsnorm" else None
        self.embed_multiplier = 1.0
        if embed_scale == "published":  # input RMS sqrt(2/(5D)) * sqrt(2.5 D) = 1 at init
            std = math.sqrt(2.0 / (5 * D))
            nn.init.trunc_normal_(decoder.embed.weight, std=std, a=-3 * std, b=3 * std)
            self.embed_multiplier = math.sqrt(2.5 * D)

    # -- building blocks --------------------------------------------------------------------------

    def token_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token-slot inputs (B, T, D), scaled to the hidden states' norm."""
        e = self.decoder.embed(tokens)  # (B, T, D)
        return self.token_norm(e) if self.token_norm is not None else e * self.embed_multiplier

    def slot_inputs(self, x: torch.Tensor, thoughts: torch.Tensor) -> torch.Tensor:
        """Interleaved slot inputs (B, T*(K+1), D) from token inputs (B, T, D) and thoughts (B, T, K, D)."""
        return interleave(x, thoughts + x[:, :, None] if self.thought_skip else thoughts)

    def run_slots(self, x: torch.Tensor, thoughts: torch.Tensor) -> torch.Tensor:
        """One decoder pass over all slots: token inputs (B, T, D) and thought inputs (B, T, K, D)
        -> hidden states (B, T, K+1, D); [:, t, k] is the output of slot k of token t."""
        B, T, D = x.shape
        G = self.slots_per_token
        mask = slot_mask(T * G, T * G, G, self.decoder.cfg.window, x.device)
        h = self.decoder.hidden_states(embeds=self.slot_inputs(x, thoughts),
                                       positions=slot_positions(0, T, G, x.device),
                                       attn_mask=mask)  # (B, T*G, D)
        return h.view(B, T, G, D)

    def initial_thoughts(self, x: torch.Tensor) -> torch.Tensor:
        """Initial guesses (B, T, K, D): a pass over the token slots alone; thought k of token t
        starts at that pass's hidden state at t (exact for the first thought of the first token)."""
        B, T, D = x.shape
        if self.thoughts == 0:
            return x.new_zeros(B, T, 0, D)
        h0 = self.decoder.hidden_states(embeds=x, positions=slot_positions(0, T, 1, x.device),
                                        attn_mask=slot_mask(T, T, 1, self.decoder.cfg.window,
                                                            x.device))  # (B, T, D)
        return h0[:, :, None].expand(B, T, self.thoughts, D)  # (B, T, K, D)

    def jacobi_thoughts(self, x: torch.Tensor, sweeps: int) -> torch.Tensor:
        """Thoughts (B, T, K, D) after the initial pass and `sweeps` Jacobi sweeps (differentiable)."""
        z = self.initial_thoughts(x)  # (B, T, K, D)
        for _ in range(sweeps if self.thoughts else 0):
            z = self.run_slots(x, z)[:, :, :-1]  # (B, T, K, D): slot k-1's output feeds slot k
        return z

    @torch.no_grad()
    def exact_thoughts(self, x: torch.Tensor) -> torch.Tensor:
        """The exact thoughts (B, T, K, D), solved slot by slot without a KV cache (T*K passes)."""
        B, T, D = x.shape
        z = x.new_zeros(B, T, self.thoughts, D)  # (B, T, K, D)
        for t in range(T):
            for k in range(self.thoughts):
                h = self.run_slots(x[:, :t + 1], z[:, :t + 1])  # (B, t+1, K+1, D)
                z[:, t, k] = h[:, t, k]  # later slots of token t cannot reach slot k (causal)
        return z

    def sweeps(self) -> int:
        """J for this forward: drawn per training step when a range is set (its top in eval mode)."""
        if self.max_jacobi_sweeps is None:
            return self.jacobi_sweeps
        if not self.training:
            return self.max_jacobi_sweeps
        return int(torch.randint(self.jacobi_sweeps, self.max_jacobi_sweeps + 1, ()))

    # -- the family interface ---------------------------------------------------------------------

    def train_hidden(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_length(inputs.shape[1])
        x = self.token_inputs(inputs)  # (B, T, D)
        # training: J Jacobi sweeps; evaluation: the exact thoughts, so scores are exact NLLs
        z = self.jacobi_thoughts(x, self.sweeps()) if self.training else self.exact_thoughts(x)
        h = self.run_slots(x, z)[:, :, -1]  # (B, T, D): the last slot of each token predicts
        return h, z  # (B, T, D), (B, T, K, D)

    @torch.no_grad()
    def exact_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check_length(tokens.shape[1])
        x = self.token_inputs(tokens)  # (B, T, D)
        h = self.run_slots(x, self.exact_thoughts(x))[:, :, -1]  # (B, T, D)
        return self.decoder.logits(h)  # (B, T, V)

    @torch.no_grad()
    def start_decode(self, tokens: torch.Tensor, max_len: int | None = None
                     ) -> tuple[torch.Tensor, DecodeState]:
        B, P = tokens.shape
        self.check_length(P)
        G = self.slots_per_token
        cache = self.decoder.new_cache(B, G * (max_len or self.decoder.cfg.block_size))
        state = DecodeState(cache, 0)
        if self.prefill_mode == "sequential":
            logits = None
            for t in range(P):
                logits, state = self.decode_step(tokens[:, t], state)
            return logits, state
        x = self.token_inputs(tokens)  # (B, P, D)
        z = self.initial_thoughts(x)  # (B, P, K, D)
        for _ in range(P * self.thoughts - 1 if self.thoughts else 0):  # exact by then
            new = self.run_slots(x, z)[:, :, :-1]  # (B, P, K, D)
            converged = (new - z).abs().max() <= self.prefill_tol
            z = new
            if converged:
                break
        mask = slot_mask(P * G, P * G, G, self.decoder.cfg.window, x.device)
        h = self.decoder.hidden_states(embeds=self.slot_inputs(x, z), cache=cache, attn_mask=mask,
                                       positions=slot_positions(0, P, G, x.device))  # (B, P*G, D)
        state.position = P
        return self.decoder.logits(h[:, -1]), state  # (B, V)

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, state: DecodeState) -> tuple[torch.Tensor, DecodeState]:
        self.check_length(state.position + 1)
        G, window = self.slots_per_token, self.decoder.cfg.window
        inp = self.token_inputs(token[:, None])  # (B, 1, D): the token slot
        position = torch.full((1,), state.position, device=token.device)  # (1,)
        x = inp
        for g in range(G):  # the token slot, then K thought slots fed the previous output
            if g and self.thought_skip:
                inp = inp + x  # (B, 1, D)
            n_key = state.cache.length + 1
            inp = self.decoder.hidden_states(embeds=inp, positions=position, cache=state.cache,
                                             attn_mask=slot_mask(1, n_key, G, window,
                                                                 token.device))  # (B, 1, D)
        state.position += 1
        return self.decoder.logits(inp[:, -1]), state  # (B, V)
