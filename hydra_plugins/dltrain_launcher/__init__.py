"""dltrain's vectorised launcher under the name Hydra accepts: Hydra instantiates a launcher only from a class in
the `hydra_plugins` namespace package (hydra.core.plugins.Plugins.is_in_toplevel_plugins_module), so
conf/hydra/launcher/vectorized.yaml names this subclass; the launcher itself is dltrain/sweep/vectorized.py. Hydra
imports this module at every start while it scans for plugins: it imports nothing heavy."""
from dltrain.sweep import vectorized


class VectorizedLauncher(vectorized.VectorizedLauncher):
    """`hydra/launcher=vectorized`: a sweep's points trained as stacks (dltrain.sweep.vectorized)."""
