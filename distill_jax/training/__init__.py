"""Device mesh and logical partitioning, optimizers, losses, the jitted train step, checkpoints and the train loop."""
