"""Model, losses, decoding and the training loop (no I/O)."""
