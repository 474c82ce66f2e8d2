"""Training: the run configuration, building a run's family and guide, checkpoints, the trainer."""
