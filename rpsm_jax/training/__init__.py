"""Training: the train step and loop, optimiser, checkpoints, writers, 2D pretraining."""
