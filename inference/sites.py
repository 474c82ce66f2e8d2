"""Names shared by the Pyro models and guides of ltm."""

LATENT_SITE = "z"  # sequence-level latent thoughts, event shape (N_z, D_z)
TOKEN_SITE = "tokens"  # observed next tokens, event shape (T,)
SEQUENCE_PLATE = "sequences"  # plate over the sequences of a batch
