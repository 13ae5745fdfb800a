"""What training does to gradients and memory: gradient-norm logging and the per-step memory breakdown."""
