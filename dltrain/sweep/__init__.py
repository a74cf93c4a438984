"""Sweeps: many runs from one command line (`dltrain -m`), their plan, ledger, HParams and the end table.

plan.py composes and checks a sweep's points and reports jobs as they end; jobs.py is the function Hydra calls
once per job; ledger.py records how each job ended; hparams.py and study.py write the HParams experiment and the
optimization direction; runs_table.py prints the side-by-side table.
May import: dltrain.core, dltrain.models, dltrain.data, dltrain.run, dltrain.sweep. Not tools or cli.
"""
