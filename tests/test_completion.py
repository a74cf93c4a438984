"""Tab completion as a user meets it: a real interactive bash on a pseudo-terminal, with the script that
`dltrain --show-completion bash` prints (or `--install-completion` installs) sourced; keys are typed, Tab pressed,
and the terminal's text read back. bash breaks words at '=' (COMP_WORDBREAKS), which only a real bash shows.
zsh is not tested: it is not installed where these tests were written."""
from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dltrain.core.conf_dirs import groups
from tests.conftest import cli

BIN = Path(sys.executable).parent  # where the installed `dltrain` command is
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x07")  # escape sequences and the bell: no text on the screen
CLEAR_LINE = "\x15"  # Ctrl-U


def screen(output: str) -> tuple[list[str], int]:
    """The lines a terminal shows for this output, and the cursor's column on the last one. With TERM=dumb
    readline writes text, carriage returns, backspaces and newlines (and the bell, dropped)."""
    lines: list[list[str]] = [[]]
    column = 0
    for char in CONTROL.sub("", output):
        if char == "\n":
            lines.append([])
            column = 0
        elif char in "\r\b":
            column = 0 if char == "\r" else max(column - 1, 0)
        else:
            lines[-1].extend(" " * (column + 1 - len(lines[-1])))
            lines[-1][column] = char
            column += 1
    return ["".join(line) for line in lines], column


class Bash:
    """An interactive bash on a pseudo-terminal, 200 columns wide (no wrapped lines), prompt `$ `."""

    def __init__(self, cwd: Path, home: Path, args: list[str]) -> None:
        self.terminal, pty_side = os.openpty()
        fcntl.ioctl(pty_side, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "TERM": "dumb", "PS1": "$ ", "INPUTRC": "/dev/null",
               "LANG": "C.UTF-8"}
        self.process = subprocess.Popen(["bash", *args, "-i"], stdin=pty_side, stdout=pty_side, stderr=pty_side,
                                        cwd=cwd, env=env, start_new_session=True)
        os.close(pty_side)
        self.output = ""
        self.wait_for(lambda lines: lines[-1].endswith(("$ ", "# ")))  # a startup file may set its own prompt
        self.run("PS1='$ '")

    def wait_for(self, done, timeout: float = 60) -> list[str]:  # noqa: ANN001
        """Read the terminal until done(lines) holds for the screen's lines, the last one cut at the cursor."""
        deadline = time.monotonic() + timeout
        while True:
            lines, column = screen(self.output)
            lines[-1] = lines[-1][:column]
            if done(lines):
                return lines
            assert time.monotonic() < deadline, f"bash did not answer; it wrote: {self.output!r}"
            if select.select([self.terminal], [], [], 0.2)[0]:
                self.output += os.read(self.terminal, 65536).decode(errors="replace")

    def run(self, command: str) -> None:
        """Run a command and wait for the next prompt."""
        before = len(screen(self.output)[0])
        os.write(self.terminal, f"{command}\n".encode())
        self.wait_for(lambda lines: len(lines) > before and lines[-1] == "$ ")

    def type(self, keys: str) -> list[str]:
        """Type keys (Tab as \\t), then a '#' to see when bash has dealt with them all; the screen's lines from
        the prompt on (the last one up to the '#'). The line is cleared afterwards."""
        shown = len(screen(self.output)[0]) - 1  # the prompt's line
        os.write(self.terminal, (keys + "#").encode())
        lines = self.wait_for(lambda lines: lines[-1].endswith("#"))[shown:]
        os.write(self.terminal, CLEAR_LINE.encode())
        self.wait_for(lambda lines: lines[-1] == "$ ")
        return [*(line.rstrip() for line in lines[:-1]), lines[-1][:-1]]  # the blanks that erased text go

    def close(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        os.close(self.terminal)


@pytest.fixture(scope="module")
def bash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bash]:
    """bash --norc --noprofile -i, with the completion script sourced as `--show-completion` prints it, in a
    folder that holds an outputs/ run folder."""
    cwd = tmp_path_factory.mktemp("work")
    (cwd / "outputs").mkdir()
    shell = Bash(cwd, cwd, ["--norc", "--noprofile"])
    shell.run("source <(dltrain --show-completion bash)")
    yield shell
    shell.close()


MODELS = set(groups()["model"])


@pytest.mark.parametrize("keys, line", [
    ("dltrain model=c\t", "$ dltrain model=cnn "),  # a group's choice, after the '=' bash breaks words at
    ("dltrain mo\t", "$ dltrain model="),  # the group, up to its '='
    ("dltrain data=digits optim=adag\t", "$ dltrain data=digits optim=adagrad "),  # after another override
    ('dltrain "model=c\t', '$ dltrain "model=cnn" '),  # in quotes, where '=' breaks no word
    ("dltrain ru\t", "$ dltrain runs "),  # a sub-command
    ("dltrain eval --la\t", "$ dltrain eval --last "),  # a sub-command's option
    ("dltrain plan model=c\t", "$ dltrain plan model=cnn "),  # the plan of a run takes a run's overrides
    ("dltrain trainer.resume=out\t", "$ dltrain trainer.resume=outputs/"),  # after '=', what no choice names: files
])
def test_tab_completes_the_word_in_place(bash: Bash, keys: str, line: str) -> None:
    assert bash.type(keys)[-1] == line


def test_tab_tab_after_a_group_lists_that_groups_choices_only(bash: Bash) -> None:
    lines = bash.type("dltrain model=\t\t")
    assert lines[0] == lines[-1] == "$ dltrain model="  # the line is kept, the choices listed below it
    listed = {word for line in lines[1:-1] for word in line.split()}
    assert listed == MODELS and "optim=adam" not in listed  # the model choices, as they complete 'model='


def test_the_installed_completion_works_in_a_new_shell(tmp_path) -> None:
    """`dltrain --install-completion bash` (into ~/.bash_completions, sourced from ~/.bashrc), then a new
    interactive bash, in a project of the user's own: its models complete too."""
    assert cli(["init", "proj"], cwd=tmp_path).returncode == 0
    installed = cli(["--install-completion", "bash"], cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert installed.returncode == 0, installed.stderr
    shell = Bash(tmp_path / "proj", tmp_path, [])  # reads /etc/bash.bashrc and ~/.bashrc, as a new terminal does
    try:
        assert shell.type("dltrain model=myn\t")[-1] == "$ dltrain model=mynet "
        listed = {word for line in shell.type("dltrain model=\t\t")[1:-1] for word in line.split()}
        assert listed == MODELS | {"mynet"}
    finally:
        shell.close()
