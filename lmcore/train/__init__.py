"""The one training loop, checkpoints, optimiser/schedule, throughput accounting and tracking."""
