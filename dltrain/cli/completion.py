"""Bash completion that treats an override (`model=cnn`) as one word. bash splits the words it hands a completion
function at every COMP_WORDBREAKS character (`=` and `:` among them), and readline replaces only the text after
the last of them; typer's bash script passes those split words on, so `dltrain model=c<Tab>` became
`model=conf/` (no reply, then file names). The script here sends the line up to the cursor instead, the command
splits it as the shell would (quotes included) and answers with what readline replaces: `cnn` for `model=c`.
`dltrain --show-completion bash` and `--install-completion` emit it; zsh, fish and PowerShell keep typer's."""
from __future__ import annotations

import typer

from dltrain.core import env

try:  # typer < 0.16 runs on click; later ones carry their own copy of it
    from click.shell_completion import CompletionItem, ShellComplete, add_completion_class, split_arg_string
except ImportError:
    from typer._click.shell_completion import CompletionItem, ShellComplete, add_completion_class, split_arg_string

LINE_VAR = "_DLTRAIN_COMP_LINE"  # the command line up to the cursor (bash's COMP_LINE, cut at COMP_POINT)
SHELL_NAME = "bash_line"  # the instruction is complete_bash_line: typer splits it at its first '_'

BASH_SCRIPT = r"""
%(complete_func)s() {
    local IFS=$'\n'
    COMPREPLY=( $( env LINE_VAR="${COMP_LINE:0:COMP_POINT}" COMP_WORDBREAKS="$COMP_WORDBREAKS" \
                   %(autocomplete_var)s=complete_SHELL_NAME $1 ) )
    return 0
}

complete -o default -F %(complete_func)s %(prog_name)s
""".replace("LINE_VAR", LINE_VAR).replace("SHELL_NAME", SHELL_NAME)  # typer fills in the three %(...)s


def open_quote(line: str) -> bool:
    """Whether the line ends inside a quote (`dltrain "model=c`): readline's word then starts after the quote."""
    import shlex

    try:
        shlex.split(line)
    except ValueError:  # no closing quotation
        return True
    return False


class LineBashComplete(ShellComplete):
    """Answers the script above: one reply per line, each cut to the part readline replaces."""

    name = SHELL_NAME
    source_template = BASH_SCRIPT
    replaced_from = 0  # characters of the incomplete word before readline's own word (after its last '=' or ':')
    word = ""

    def source_vars(self) -> dict[str, str]:
        return {"complete_func": self.func_name, "autocomplete_var": self.complete_var, "prog_name": self.prog_name}

    def get_completion_args(self) -> tuple[list[str], str]:
        line = env.completion_line(LINE_VAR)
        words = split_arg_string(line)
        self.word = words.pop() if words and not line[-1:].isspace() else ""  # after a space: a new, empty word
        breaks = "" if open_quote(line) else env.word_breaks()  # in quotes, '=' breaks nothing
        self.replaced_from = max((self.word.rfind(char) + 1 for char in breaks if not char.isspace()), default=0)
        return words[1:], self.word

    def format_completion(self, item: CompletionItem) -> str:
        # click answers `--option=val` with values alone: only replies that repeat the word's head are cut
        head = self.word[:self.replaced_from]
        return item.value[len(head):] if item.value.startswith(head) else item.value


def use_line_completion_for_bash() -> None:
    """Register the answering class, and make typer's --show-completion/--install-completion for bash emit its
    script: typer reads the scripts it prints from this one table (typer/_completion_shared.py)."""
    from typer import _completion_shared

    add_completion_class(LineBashComplete, SHELL_NAME)
    scripts = getattr(_completion_shared, "_completion_scripts", None)
    if isinstance(scripts, dict):  # else typer's own script stays: overrides complete only without '='
        scripts["bash"] = BASH_SCRIPT


class CommandsAndOverrides(typer.core.TyperGroup):
    """Completion (`dltrain --install-completion`) of sub-commands and their options, and of overrides: a config
    group's choices (`model=cnn`) at any position of a training command line, the project's own ones included."""

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> tuple:
        if ctx.resilient_parsing and args and "=" in args[0]:  # completing after an override: a training command
            return None, None, args[1:]
        return super().resolve_command(ctx, args)

    def shell_complete(self, ctx: typer.Context, incomplete: str) -> list:
        overrides = [CompletionItem(item) for item in override_choices(incomplete)]
        return overrides if ctx.args else super().shell_complete(ctx, incomplete) + overrides


def override_choices(incomplete: str) -> list[str]:
    """Each `group=choice` (the project's own ones included) that starts with `incomplete`: what a training
    command line, or `dltrain plan`'s, completes to."""
    from dltrain.core.conf_dirs import groups
    from dltrain.run.plugins import project_conf, project_root

    choices = [f"{group}={choice}" for group, names in groups(project_conf(project_root([]))).items()
               if group != "project" for choice in names]
    return [item for item in choices if item.startswith(incomplete)]
