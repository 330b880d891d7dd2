"""The charrnn group as a whole: every command's help, --version, NO_COLOR."""

import click

from charrnn.cli import main


def commands(command, path=()):
    """(path, command) for the group and every command and subcommand under it, depth first."""
    yield path, command
    if isinstance(command, click.Group):
        for name in command.list_commands(None):
            yield from commands(command.get_command(None, name), (*path, name))


def test_help_for_every_command(cli):
    """Each command's --help (and -h) exits 0 with its docstring's summary, an example and every option; a new
    command or subcommand is covered as soon as it is added to the group."""
    walked = list(commands(main))
    assert {" ".join(path) for path, _ in walked} >= {"", "train", "sample", "eval", "info", "plot", "export", "import",
                                                      "serve", "classify", "classify train", "classify predict"}
    for path, command in walked:
        for flag in ("--help", "-h"):
            result = cli([*path, flag])
            name = " ".join(("charrnn", *path))
            assert result.exit_code == 0, (name, result.output)
            shown = " ".join(result.output.split())  # click rewraps the text to the terminal's width
            summary = " ".join((command.help or "").split("\n\n")[0].split())
            assert summary and summary in shown, (name, summary)
            assert "Example" in result.output, name
            for param in command.params:
                if isinstance(param, click.Option) and not param.hidden:
                    for opt in param.opts + param.secondary_opts:
                        assert opt in result.output, (name, opt)


def test_no_color_and_version(monkeypatch, ckpt_path, cli_stdout):
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in cli_stdout("info", ckpt_path)
    assert cli_stdout("--version").startswith("charrnn, version")
