"""core/exiting.py: a dltrain process's exit handler collects its garbage (finalizers run), then freezes what is
left so that the interpreter's teardown has nothing to walk; registered once however often it is asked."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

CHILD = """
import atexit, gc
atexit.register(lambda: print("frozen", gc.get_freeze_count() > 0, flush=True))  # runs after the handler
from dltrain.core.exiting import skip_teardown_at_exit
before = atexit._ncallbacks()
skip_teardown_at_exit()
skip_teardown_at_exit()
print("handlers added", atexit._ncallbacks() - before, flush=True)


class Noted:
    def __del__(self):
        print("finalized", flush=True)


cycle = Noted()
cycle.me = cycle  # garbage only a collection finds
del cycle
gc.disable()  # no collection but the handler's
"""


def test_the_exit_handler_collects_then_freezes_and_is_registered_once() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["handlers added 1", "finalized", "frozen True"], done.stdout
