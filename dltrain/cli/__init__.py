"""The command line: `dltrain [overrides]` and `dltrain -m` through Hydra's own entry point (main.py), the named
sub-commands through typer (commands.py), and shell completion (completion.py).
May import: anything in dltrain. Nothing imports it but the console script.
"""
