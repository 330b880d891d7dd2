"""The charrnn group as a whole: every command's help, --version, NO_COLOR."""


def test_help_for_every_command(cli):
    for command in ([], ["train"], ["sample"], ["eval"], ["info"], ["plot"]):
        result = cli([*command, "-h"])
        assert result.exit_code == 0 and "Example" in result.output


def test_no_color_and_version(monkeypatch, ckpt_path, cli_stdout):
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in cli_stdout("info", ckpt_path)
    assert cli_stdout("--version").startswith("charrnn, version")
