"""Faults that tests inject into a child process themselves (production code has no test hooks).

`python -c "import tests.faults as f; f.dead_worker_cli()" ARGS...` runs the `dltrain` command with a DDP
worker entry point whose rank 1 is killed after the first epoch; spawn pickles the entry point by name, so the
workers import it from here (PYTHONPATH must hold the repository).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def worker_dies_on_rank_1(config: Any, run_dir: str, overrides: list[str]) -> None:
    """dltrain's DDP worker, whose rank 1 is killed (SIGKILL, as by the out-of-memory killer) once the run's first
    checkpoint is saved: rank 0 is then amid training, in a collective or about to enter one."""
    import signal
    import threading
    import time

    def kill_when_saved() -> None:
        while not (Path(run_dir) / "last.pt").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.environ.get("RANK") == "1":
        threading.Thread(target=kill_when_saved, daemon=True).start()
    from dltrain.run.train import worker

    worker(config, run_dir, overrides)


def dead_worker_cli() -> None:
    import dltrain.run.train
    from dltrain.cli.main import main

    dltrain.run.train.worker = worker_dies_on_rank_1
    sys.argv = ["dltrain", *sys.argv[1:]]
    main()


def failing_writes_cli() -> None:
    """The `dltrain` command on a disk that fails from the Nth atomic write on (DLTRAIN_TEST_FAIL_FROM=N,
    DLTRAIN_TEST_ERRNO=ENOSPC|EACCES|EROFS): ENOSPC when the data is flushed (a full disk accepts the temp file's
    creation, then the write fails), EACCES/EROFS when the temp file is created (a folder turned read-only)."""
    import errno
    import stat
    import tempfile

    fail_from, code = int(os.environ["DLTRAIN_TEST_FAIL_FROM"]), getattr(errno, os.environ["DLTRAIN_TEST_ERRNO"])
    calls = {"n": 0}

    def failing(real: Any, at_create: bool) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            folder = not at_create and stat.S_ISDIR(os.fstat(args[0]).st_mode)  # files.sync_folder's, not a write
            if at_create == (code != errno.ENOSPC) and not folder:
                calls["n"] += 1
                if calls["n"] >= fail_from:
                    where = kwargs.get("dir") if at_create else None
                    raise OSError(code, os.strerror(code), *([where] if where else []))
            return real(*args, **kwargs)
        return call

    os.fsync = failing(os.fsync, at_create=False)
    tempfile.mkstemp = failing(tempfile.mkstemp, at_create=True)
    from dltrain.cli.main import main

    sys.argv = ["dltrain", *sys.argv[1:]]
    main()


def run_dir_deleted_cli() -> None:
    """The `dltrain` command with a callback `delete_run_dir` that deletes the run folder after epoch 1 (a user
    cleaning up the wrong folder mid-run)."""
    import shutil

    from hydra.core.hydra_config import HydraConfig

    from dltrain import Callback, register_callback
    from dltrain.cli.main import main

    @register_callback("delete_run_dir")
    class DeleteRunDir(Callback):
        def __init__(self, after_epoch: int) -> None:
            self.after_epoch = after_epoch

        def on_epoch_end(self, state: Any) -> None:
            if state.epoch == self.after_epoch:
                shutil.rmtree(HydraConfig.get().runtime.output_dir)

    sys.argv = ["dltrain", *sys.argv[1:], "+callbacks.delete_run_dir={after_epoch:1}"]
    main()


def signal_inside_save_cli() -> None:
    """The `dltrain` command that receives a real signal (DLTRAIN_TEST_SIGNAL=SIGINT|SIGTERM) from inside torch.save's
    writes of its Nth checkpoint (DLTRAIN_TEST_SAVE=N): a Ctrl-C that lands while a checkpoint is half written."""
    import signal
    from types import SimpleNamespace

    import torch

    real_save, number, saves = torch.save, int(os.environ["DLTRAIN_TEST_SAVE"]), {"n": 0}
    sig = getattr(signal, os.environ["DLTRAIN_TEST_SIGNAL"])

    def save(obj: Any, file: Any, *args: Any, **kwargs: Any) -> Any:
        saves["n"] += 1
        if saves["n"] == number:
            writes, target = {"n": 0}, file

            def write(data: Any) -> int:
                writes["n"] += 1
                if writes["n"] == 3:  # past the zip header, amid the tensors' records
                    os.kill(os.getpid(), sig)
                return target.write(data)
            file = SimpleNamespace(write=write, flush=target.flush)
        return real_save(obj, file, *args, **kwargs)

    torch.save = save
    from dltrain.cli.main import main

    sys.argv = ["dltrain", *sys.argv[1:]]
    main()


def swallowed_signal_cli() -> None:
    """The `dltrain` command in which a real signal (DLTRAIN_TEST_SIGNAL) arrives while the run is built, inside a
    library's `try: ... except:` (as around an import) that swallows the interrupt, or (DLTRAIN_TEST_REPLACE=1)
    turns it into an error of its own, as an import cut short does."""
    import signal
    import time

    import dltrain.run.assemble

    real_build, sig = dltrain.run.assemble.build, getattr(signal, os.environ["DLTRAIN_TEST_SIGNAL"])

    def build(config: Any) -> Any:
        parts = real_build(config)
        try:
            os.kill(os.getpid(), sig)
            time.sleep(1)  # the handler runs here
        except BaseException:  # noqa: BLE001  (the library's bare except)
            if os.environ.get("DLTRAIN_TEST_REPLACE"):
                raise RecursionError("maximum recursion depth exceeded") from None
        return parts

    dltrain.run.assemble.build = build
    from dltrain.cli.main import main

    sys.argv = ["dltrain", *sys.argv[1:]]
    main()


def signal_after_epoch_cli() -> None:
    """The `dltrain` command that receives a real signal (DLTRAIN_TEST_SIGNAL=SIGINT|SIGTERM|SIGUSR1) as soon as the
    checkpoints of epoch DLTRAIN_TEST_EPOCH are written: a Ctrl-C (or a scheduler's signal) between two epochs, at
    an epoch known in advance. In a sweep the first job that reaches that epoch gets it."""
    import signal
    import time

    from dltrain.core.callbacks import Checkpointer

    real_end, epoch = Checkpointer.on_epoch_end, int(os.environ["DLTRAIN_TEST_EPOCH"])
    sig = getattr(signal, os.environ["DLTRAIN_TEST_SIGNAL"])

    def on_epoch_end(self: Any, state: Any) -> None:
        real_end(self, state)
        if state.epoch == epoch:
            os.kill(os.getpid(), sig)
            time.sleep(10)  # the handler raises here (SIGUSR1 is sent on as SIGTERM, which raises)

    Checkpointer.on_epoch_end = on_epoch_end
    from dltrain.cli.main import main

    sys.argv = ["dltrain", *sys.argv[1:]]
    main()
