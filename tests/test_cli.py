"""`cxrl --help` lists exactly the registered commands, and each has working help."""

import subprocess
import sys

import pytest

from cxrl import cli


def registered_commands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def test_help_runs_and_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "cxrl.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: cxrl" in out.stdout
    for name in registered_commands():
        assert name in out.stdout


@pytest.mark.parametrize("name", registered_commands())
def test_each_command_has_help(name):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0


def test_no_command_prints_usage_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: cxrl" in capsys.readouterr().out
