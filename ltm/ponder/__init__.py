"""Token-level pondering families: thoughts as Pyro sites under a degenerate (Delta) prior."""
