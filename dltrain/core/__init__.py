"""The core: what one training run is made of, with no notion of a command line, a config file or a sweep.

The engine's one loop (engine.py), tasks (the step and metrics of each kind of problem), callbacks, checkpoints,
optimizers, learning-rate schedules, regularization, the registries every component is built from, value rules,
DDP primitives, atomic file writes, TensorBoard event files and tags, and the types the engine trains on.
May import: only dltrain.core (and torch, the standard library, third-party packages). Everything else imports it.
"""

VERSION = "0.1.0"  # the release (pyproject.toml's version); the facade re-exports it as dltrain.__version__
