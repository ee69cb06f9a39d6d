"""Training: the contrastive loss, gradient caching, the training loop, checkpoints."""
