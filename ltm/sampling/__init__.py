"""One sampler for every family: settings, per-row random streams, thoughts, the decode loop.

    from ltm.sampling import SamplingConfig, generate, sample_text
    rows = generate(family, [[bos, 17, 42]], sampling=SamplingConfig(max_new_tokens=20, top_p=0.95))
    texts = sample_text("runs/ltm-default", "Return the", num_samples=2)
"""

from __future__ import annotations

from ltm.sampling.loop import decode
from ltm.sampling.sampler import generate
from ltm.sampling.settings import SamplingConfig, filter_logits
from ltm.sampling.streams import row_seed
from ltm.sampling.text import generate_text, sample_text
from ltm.sampling.thoughts import conditional_latents, prior_latents

__all__ = ["SamplingConfig", "filter_logits", "decode", "generate", "generate_text", "sample_text",
           "conditional_latents", "prior_latents", "row_seed"]
