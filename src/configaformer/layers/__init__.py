"""Shared pieces used by blocks and the model: norms, activations, token shift, gates, heads."""
