"""Detection: metrics, the model registry, training on simulated fleets, evaluation on real data."""
