"""dltrain: a config-driven deep-learning experiment runner (Hydra configs, one engine, TensorBoard)."""

__version__ = "0.1.0"
