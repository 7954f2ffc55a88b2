"""Profiling and search over configs: what a config costs (parameters, FLOPs, memory, speed,
KV cache) and, later, which configs meet a task's accuracy, memory and speed needs.

    configaformer profile CONFIG...   one row per config (search/profile.py)

The package acts on configs and built models from outside; nothing in the model imports it.
"""
