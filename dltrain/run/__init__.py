"""One run: from a composed Hydra config to a trained, checkpointed run folder.

The config door (config.py, door.py, their types in config_types.py: checked once), the assembly of a run
(assemble.py), one job (train.py), resuming, DDP launching and cluster environments, threads, signals, user
projects (plugins.py) and the command line's overrides as one run sees them.
May import: dltrain.core, dltrain.models, dltrain.data, dltrain.run. Not sweep, tools or cli.
"""
