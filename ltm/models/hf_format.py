"""The Hugging Face format of a Llama-shaped decoder: its config.json and its tensor names.

ltm's `Decoder` is the Llama architecture (`LlamaForCausalLM`; SmolLM2, TinyLlama and Llama 3.x
are Llamas) and, with biases on the query, key and value projections, Qwen2 (`Qwen2ForCausalLM`).
This module translates between the two: a Hugging Face config to a `DecoderConfig` and back, and
a Hugging Face state dict to the decoder's and back (the only change besides names: ltm keeps the
query, key and value projections as one matrix, in that order).

    cfg = decoder_config_from_hf(json.load(open("config.json")), block_size=256)
    ltm_state = decoder_state_from_hf(hf_state, cfg)      # names under the decoder
"""

from __future__ import annotations

import torch

from ltm.core.errors import ConfigError
from ltm.models.config import DecoderConfig

HF_PREFIXES = ("model.", "lm_head.")  # the names of a Hugging Face decoder's tensors start so
# Architectures (config.json "architectures") and their model_type.
SUPPORTED = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
_LAYER_NAMES = {  # ltm name in block i -> Hugging Face name in model.layers.i
    "attn_norm.weight": "input_layernorm.weight",
    "attn.out.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate.weight": "mlp.gate_proj.weight",
    "mlp.up.weight": "mlp.up_proj.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
}


def architecture(hf: dict, source: str) -> str:
    """The supported architecture `hf` (a config.json mapping) declares.

    Raises:
        ConfigError: for any other, naming it and the supported ones.
    """
    names = hf.get("architectures") or []
    known = [a for a in names if a in SUPPORTED]
    if not known:
        named = ", ".join(names) if names else f"model_type {hf.get('model_type')!r}"
        raise ConfigError(f"{source} is a {named} checkpoint, which ltm cannot load; supported "
                          f"architectures: {', '.join(SUPPORTED)}.")
    return known[0]


def rope_settings(hf: dict, source: str) -> tuple[float, dict | None]:
    """(RoPE base, Llama 3 scaling or None) from either config format (`rope_theta` and
    `rope_scaling`, or transformers 5's `rope_parameters`)."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    base = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.pop("rope_type", params.pop("type", "default"))
    if kind == "default":
        return base, None
    if kind != "llama3":
        raise ConfigError(f"{source} uses RoPE scaling {kind!r}, which ltm does not implement; "
                          f"supported: none (default) and 'llama3'.")
    need = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in need if k not in params]
    if missing:
        raise ConfigError(f"{source}: its llama3 RoPE scaling lacks {', '.join(missing)}.")
    return base, {"rope_type": "llama3", **{k: params[k] for k in need}}


def decoder_config_from_hf(hf: dict, *, block_size: int, n_latent: int = 0,
                           d_latent: int | None = None, source: str = "the checkpoint"
                           ) -> DecoderConfig:
    """The `DecoderConfig` of a Hugging Face Llama or Qwen2 config.json (a mapping).

    Args:
        block_size: Longest sequence the ltm model takes (at most max_position_embeddings).
        n_latent, d_latent: The LTM's latent vectors (0: no cross-attention).
        source: How messages name the checkpoint.

    Raises:
        ConfigError: an unsupported architecture or option, or a block_size beyond the checkpoint's.
    """
    arch = architecture(hf, source)
    width, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    unsupported = [
        (hf.get("hidden_act", "silu") != "silu", f"hidden_act {hf.get('hidden_act')!r} (ltm: silu)"),
        (bool(hf.get("mlp_bias")), "mlp_bias"),
        (hf.get("head_dim") not in (None, width // heads), f"head_dim {hf.get('head_dim')} other than "
                                                           f"hidden_size / num_attention_heads"),
        (bool(hf.get("use_sliding_window")), "use_sliding_window"),
        (float(hf.get("partial_rotary_factor", 1.0)) != 1.0, "partial_rotary_factor"),
    ]
    for bad, what in unsupported:
        if bad:
            raise ConfigError(f"{source} sets {what}, which ltm's decoder does not implement.")
    limit = int(hf.get("max_position_embeddings", block_size))
    if block_size > limit:
        raise ConfigError(f"block_size {block_size} exceeds the {limit} positions {source} was "
                          f"trained for (max_position_embeddings); use --block-size {limit} or less.")
    base, scaling = rope_settings(hf, source)
    return DecoderConfig(
        vocab_size=int(hf["vocab_size"]), block_size=block_size, n_layer=int(hf["num_hidden_layers"]),
        n_head=heads, d_model=width, d_ff=int(hf["intermediate_size"]), n_latent=n_latent,
        d_latent=d_latent, rope_base=base, norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        n_kv_head=int(hf.get("num_key_value_heads") or heads),
        attn_bias=arch == "Qwen2ForCausalLM" or bool(hf.get("attention_bias")),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), rope_scaling=scaling)


def hf_config_from_decoder(cfg: DecoderConfig, *, bos_id: int | None, eos_id: int | None,
                           pad_id: int | None = None) -> dict:
    """A Hugging Face config.json (a mapping) for the plain decoder `cfg`: Qwen2 when it has
    attention biases, else Llama (its cross-attention, if any, has no place in either)."""
    qwen = cfg.attn_bias
    hf = {
        "architectures": ["Qwen2ForCausalLM" if qwen else "LlamaForCausalLM"],
        "model_type": "qwen2" if qwen else "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim, "hidden_act": "silu",
        "max_position_embeddings": cfg.block_size, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_base, "rope_scaling": cfg.rope_scaling,
        "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": bos_id, "eos_token_id": eos_id,
        "pad_token_id": pad_id, "torch_dtype": "float32", "use_cache": True,
    }
    if not qwen:
        hf.update(attention_bias=False, mlp_bias=False)
    if cfg.window is not None:
        raise ConfigError(f"a decoder with a sliding window ({cfg.window}) has no Llama or Qwen2 "
                          f"equivalent; export a model trained with full attention.")
    return hf


def _qkv_names(i: int) -> list[str]:
    return [f"model.layers.{i}.self_attn.{p}_proj" for p in "qkv"]


def decoder_state_from_hf(hf_state: dict[str, torch.Tensor], cfg: DecoderConfig,
                          source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """The decoder's state dict (its own names) from a Hugging Face one; cross-attention, which a
    pretrained model has none of, is left out.

    Raises:
        ConfigError: a tensor the decoder needs is missing from `hf_state`.
    """
    def take(name: str) -> torch.Tensor:
        if name not in hf_state:
            raise ConfigError(f"{source} lacks tensor '{name}'; the download is incomplete or the "
                              f"checkpoint is not a {', '.join(SUPPORTED)}.")
        return hf_state[name]

    out = {"embed.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    if not cfg.tie_embeddings:
        out["head.weight"] = take("lm_head.weight")
    for i in range(cfg.n_layer):
        for ours, theirs in _LAYER_NAMES.items():
            out[f"blocks.{i}.{ours}"] = take(f"model.layers.{i}.{theirs}")
        q, k, v = _qkv_names(i)
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([take(f"{n}.weight") for n in (q, k, v)])
        if cfg.attn_bias:
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([take(f"{n}.bias") for n in (q, k, v)])
    return out


def hf_state_from_decoder(state: dict[str, torch.Tensor], cfg: DecoderConfig) -> dict[str, torch.Tensor]:
    """The Hugging Face names of the decoder's pretrained-shaped tensors (`state` in the decoder's
    own names); a tied head is left out, as `save_pretrained` does."""
    out = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["norm.weight"]}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = state["head.weight"]
    widths = [cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim]
    for i in range(cfg.n_layer):
        for ours, theirs in _LAYER_NAMES.items():
            out[f"model.layers.{i}.{theirs}"] = state[f"blocks.{i}.{ours}"]
        for kind in ("weight", "bias") if cfg.attn_bias else ("weight",):
            parts = state[f"blocks.{i}.attn.qkv.{kind}"].split(widths)  # queries, keys, values
            for name, t in zip(_qkv_names(i), parts, strict=True):
                out[f"{name}.{kind}"] = t
    return out


def pretrained_names(cfg: DecoderConfig) -> set[str]:
    """The decoder's parameters (its own names) that a pretrained checkpoint gives: all but the
    cross-attention that latent thoughts add."""
    names = {"embed.weight", "norm.weight"} | (set() if cfg.tie_embeddings else {"head.weight"})
    for i in range(cfg.n_layer):
        names |= {f"blocks.{i}.{ours}" for ours in _LAYER_NAMES} | {f"blocks.{i}.attn.qkv.weight"}
        names |= {f"blocks.{i}.attn.qkv.bias"} if cfg.attn_bias else set()
    return names
