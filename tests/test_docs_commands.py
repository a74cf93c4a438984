"""Every `dltrain` command that README.md and docs/ show is accepted as written: overrides pass the same up-front
checks a real run makes (composition, sweep expansion, the config door), and sub-commands parse with their
options. Placeholders (RUN, DIR, outputs/<run>, ...) stand for a real run folder. A command that needs what a
fresh clone lacks is skipped by a visible marker in its comment: `# needs: GPU`, `# needs: cluster`,
`# needs: download` or `# needs: your files`; one shown as a mistake (`# refused: ...`) must be refused. Commands after `cd myproj` in a block run in a real
`dltrain init` project (with an epoch cap), as a user's would."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"#.*?\bneeds:\s*(.+)")
# A placeholder of a run folder in the docs -> a real one (made once per session). A command with other
# upper-case words or <...> left is a syntax template (`dltrain runs [DIR]`), not a command to run.
STARTER_CHOICES = ("mynet", "points", "widths")  # choices only a `dltrain init` project has
RUN_PLACEHOLDERS = ("outputs/<run>", "outputs/<day>/<time>", "<sweep dir>", "<run>", "RUN", "DIR", "SWEEP")
TEMPLATE = re.compile(r"<[^>]*>|\[[A-Z]|\.\.\.|/path/to/|\w\|\w|\b[A-Z]{3,}\b(?!=)")


@dataclass(frozen=True)
class Command:
    source: str       # file:line
    text: str         # as written, without the prompt and the comment
    needs: str        # the marker's reason, or ""
    in_project: bool  # typed after `cd myproj` (a project made by `dltrain init myproj`)
    refused: bool = False  # shown as a mistake (`# refused: ...` in its comment): dltrain must refuse it

    def __str__(self) -> str:
        return f"{self.source}: {self.text}"


def fenced_lines(path: Path) -> list[tuple[int, str, bool]]:
    """(line number, logical line, typed inside the starter project) of the shell blocks; `\\` continues."""
    out, in_block, shell, project, pending = [], False, False, False, ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_block, shell, project = not in_block, line[3:].strip() in ("", "bash", "sh", "console"), False
            continue
        if in_block and shell:
            line = pending + line.removeprefix("$ ").strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            out.append((number, line, project))
            project = project or bool(re.search(r"\bcd myproj\b", line))
    return out


def commands_in(path: Path) -> list[Command]:
    """Every dltrain command of a doc: lines of its shell blocks, and inline `dltrain ...` spans of its prose."""
    found, name = [], path.relative_to(REPO)
    for number, line, project in fenced_lines(path):
        needs = MARKER.search(line)
        for part in line.split("&&"):
            text = strip_comment(part)
            if text == "dltrain" or text.startswith("dltrain "):
                found.append(Command(f"{name}:{number}", text, needs.group(1).strip() if needs else "", project,
                                     refused="# refused" in line))
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), path.read_text(), flags=re.S)
    for number, line in enumerate(prose.splitlines(), 1):
        for span in re.findall(r"`(dltrain(?: [^`]*)?)`", line):
            if naming_a_subcommand(span):
                continue
            if not TEMPLATE.search(span.replace("--", "")) or template_free(span):
                found.append(Command(f"{name}:{number}", span, "", any(w in span for w in STARTER_CHOICES)))
    return found


def naming_a_subcommand(span: str) -> bool:
    """Prose that names a sub-command (`dltrain eval` reads the saved statistics) rather than typing one."""
    from dltrain.run.overrides import SUBCOMMANDS

    words = span.split()
    return len(words) == 2 and words[1] in SUBCOMMANDS and words[1] not in ("runs", "board")


def template_free(span: str) -> bool:
    """A span whose only upper-case words are run placeholders (`dltrain eval RUN`)."""
    for placeholder in RUN_PLACEHOLDERS:
        span = span.replace(placeholder, "x")
    return not TEMPLATE.search(span.replace("--", ""))


def strip_comment(text: str) -> str:
    try:
        return shlex.join(shlex.split(text, comments=True))
    except ValueError:  # an unbalanced quote is the doc's mistake: keep it so the check reports it
        return text.strip()


ALL = [c for doc in DOCS for c in commands_in(doc)]


def test_the_docs_show_commands_of_every_kind() -> None:
    """The extraction itself works: the README's first steps and the sub-commands are among the commands."""
    texts = {c.text for c in ALL}
    assert "dltrain" in texts and any(t.startswith("dltrain -m ") for t in texts)
    assert {t.split()[1] for t in texts if len(t.split()) > 1} >= {"runs", "board", "init", "eval", "predict"}
    assert any(c.in_project for c in ALL) and any(c.needs for c in ALL)


@pytest.fixture(scope="session")
def a_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real finished run (digits, 1 epoch) that stands in for RUN, DIR and outputs/<run>."""
    from tests.conftest import run

    run_dir = tmp_path_factory.mktemp("docs") / "run"
    run(["trainer.max_epochs=1", "model.hidden=[8]"], run_dir)
    return run_dir


def with_run(text: str, run_dir: Path) -> str:
    """The command with its run-folder placeholders replaced by a real run folder."""
    pattern = "|".join(re.escape(p) for p in RUN_PLACEHOLDERS)
    return re.sub(rf"(?<![\w/<])(?:{pattern})(?![\w>])", str(run_dir), text)


def door_problem(args: list[str]) -> str | None:
    """What `dltrain ARGS` (overrides, -m, Hydra's flags) refuses before it trains: the CLI's own up-front checks
    (dltrain/cli.py, in-process), then the config door for a single run."""
    from dltrain.cli.main import front_door
    from dltrain.core.registry import ConfigError
    from dltrain.run.config import RunConfig
    from tests.conftest import compose

    line, problem = front_door(args)
    if problem or line.multirun or not line.overrides_only:
        return problem
    try:
        RunConfig.parse(compose([a for a in line.rest if not a.startswith("hydra")]))
    except ConfigError as err:
        return "; ".join(err.problems)
    return None


def parse_subcommand(args: list[str]) -> None:
    """Parse a sub-command's arguments with typer's own parser (types, required arguments, known options)."""
    import typer.main

    from dltrain.cli.commands import app

    group = typer.main.get_command(app)
    if args[0] in ("--install-completion", "--show-completion"):  # parsing would install it in this shell
        assert any(args[0] in param.opts for param in group.params), args
        return
    if "--help" in args or "-h" in args:  # click prints the help and leaves with Exit(0)
        assert group.main(list(args), prog_name="dltrain", standalone_mode=False) == 0
        return
    with group.make_context("dltrain", list(args), resilient_parsing=False) as ctx:
        name, command, _ = group.resolve_command(ctx, [args[0]])
        command.make_context(name, list(args[1:]), parent=ctx).close()


BUILT_IN = [c for c in ALL if not c.in_project]


@pytest.mark.parametrize("command", BUILT_IN, ids=[str(c) for c in BUILT_IN])
def test_a_documented_command_is_accepted_as_written(command: Command, a_run: Path, monkeypatch) -> None:
    from dltrain.run.overrides import SUBCOMMANDS

    if command.needs:
        pytest.skip(f"needs: {command.needs}")
    monkeypatch.chdir(REPO)  # the docs' relative paths (examples/iris.csv) are the clone's
    args = shlex.split(with_run(command.text, a_run))[1:]
    if args and (args[0] in SUBCOMMANDS or args[0] in ("--help", "-h", "--install-completion",
                                                        "--show-completion")):
        parse_subcommand(args)
    elif command.refused:  # the doc shows a mistake and what dltrain says to it
        assert door_problem(args), command
    else:
        assert door_problem(args) is None, command


IN_PROJECT = [c for c in ALL if c.in_project and not c.needs and c.text.split()[1:2] != ["init"]]


@pytest.mark.slow
def test_the_documented_project_commands_run_in_a_new_project(tmp_path) -> None:
    """`dltrain init myproj && cd myproj`, then each command the docs type there, as a real run capped at one
    epoch (sub-commands as typed). They run in order, as a user would type them."""
    made = cli(["init", "myproj"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "myproj"
    for command in IN_PROJECT:
        args = shlex.split(command.text)[1:]
        capped = args + ["trainer.max_epochs=1"] if not args or "=" in args[-1] or args[-1].startswith("-m") else args
        done = cli(capped, cwd=project, timeout=600)
        assert done.returncode == 0, f"{command}: {done.stderr[-1500:]}"
