"""Names shared by every Pyro model and guide of ltm, and the constants of its token data."""

LATENT_SITE = "z"  # sequence-level latent thoughts, event shape (N_z, D_z)
TOKEN_SITE = "tokens"  # observed next tokens, event shape (T,)
SEQUENCE_PLATE = "sequences"  # plate over the sequences of a batch
THOUGHT_SITE = "thoughts"  # deterministic token-level thoughts of the pondering families, (B, T, K, D)
IGNORE_INDEX = -100  # target id that contributes nothing to a likelihood (padding)
