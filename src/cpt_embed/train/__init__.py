"""Training: the contrastive loss, distributed gather, chunking and gradient caching, the
input pipeline, the training loop, checkpoints, config."""
