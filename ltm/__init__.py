"""ltm: language models that think in latent space before they speak.

The package is layered, imports flowing one way (see tests/test_layering.py):

    ltm.core                      sample-site names, the registry, user-error types
    ltm.priors, ltm.inference     priors; guides, ELBO, inner loop, dual-rate optimiser, bounds
    ltm.models, ltm.ponder        the decoder and the model families
    ltm.families, ltm.data        the family registry; corpora, tokenizers, blocks
    ltm.training                  config, checkpoints, trainer
    ltm.sampling, ltm.eval        one sampler; evaluation
    ltm.cli, ltm.train/sample/evaluate   the command-line tools

The names below are imported on first use, so `import ltm.core` loads nothing above it.
"""

from __future__ import annotations

import importlib
import importlib.metadata

try:
    __version__ = importlib.metadata.version("ltm")
except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
    __version__ = "unknown"

_EXPORTS = {
    "DecoderConfig": "ltm.models", "Decoder": "ltm.models", "KVCache": "ltm.models",
    "TokenSequence": "ltm.models", "LatentThoughtModel": "ltm.models", "Family": "ltm.models",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ltm' has no attribute '{name}'")
