"""Tools that work on finished runs and user files: evaluation and export, predict, preprocessing of
features, `dltrain init`'s scaffold and the TensorBoard board.
May import: dltrain.core, dltrain.models, dltrain.data, dltrain.run, dltrain.tools. Not sweep or cli.
"""
