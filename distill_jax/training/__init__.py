"""Device mesh and logical partitioning, optimizers, losses, the jitted train step, checkpoints, the train loop,
and the Hugging Face import/export jobs."""
