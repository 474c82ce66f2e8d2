"""Decoder configuration: the one dataclass every model family builds its decoder from."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ltm.core.errors import ConfigError


@dataclass
class DecoderConfig:
    """Shape of a Llama-style decoder, optionally cross-attending to latent thought vectors.

    Attributes:
        vocab_size: Number of token ids.
        block_size: Longest sequence (in positions) the model accepts.
        n_layer: Number of transformer blocks.
        n_head: Attention heads per block.
        d_model: Residual stream width.
        d_ff: SwiGLU hidden width; defaults to 8/3 * d_model rounded up to a multiple of 16.
        n_latent: Latent vectors N_z per sequence, split evenly over layers (0 = no cross-attention).
        d_latent: Width of each latent vector; defaults to d_model.
        window: Sliding self-attention window (tokens a query sees, itself included); None = full.
        rope_base: RoPE frequency base.
        norm_eps: RMSNorm epsilon.
        n_kv_head: Key/value heads (grouped-query attention: each serves n_head / n_kv_head query
            heads); None = n_head.
        attn_bias: Biases on the query, key and value projections (Qwen2); none on the output.
        tie_embeddings: The output head is the token embedding; False: a head of its own.
        rope_scaling: Llama 3's RoPE frequency scaling, as in a Hugging Face config
            ({"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
            "original_max_position_embeddings"}); None = plain RoPE.
    """

    vocab_size: int = 256
    block_size: int = 128
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    d_ff: int | None = None
    n_latent: int = 0
    d_latent: int | None = None
    window: int | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    n_kv_head: int | None = None
    attn_bias: bool = False
    tie_embeddings: bool = True
    rope_scaling: dict | None = None

    def __post_init__(self) -> None:
        if self.d_ff is None:
            self.d_ff = 16 * ((8 * self.d_model // 3 + 15) // 16)
        if self.d_latent is None:
            self.d_latent = self.d_model
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        checks = [
            (self.vocab_size > 0, "vocab_size must be positive"),
            (self.block_size > 0, "block_size must be positive"),
            (self.n_layer > 0, "n_layer must be positive"),
            (self.d_model % self.n_head == 0, "d_model must be divisible by n_head"),
            (self.n_kv_head >= 1 and self.n_head % self.n_kv_head == 0,
             f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}"),
            ((self.d_model // self.n_head) % 2 == 0, "head width d_model/n_head must be even (RoPE)"),
            (self.n_latent >= 0, "n_latent must be >= 0"),
            (self.n_latent % self.n_layer == 0,
             f"n_latent={self.n_latent} must split evenly over n_layer={self.n_layer} layers"),
            (self.window is None or self.window >= 1, "window must be >= 1 or None"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"DecoderConfig: {message}.")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def latents_per_layer(self) -> int:
        return self.n_latent // self.n_layer

    def to_dict(self) -> dict:
        return asdict(self)
