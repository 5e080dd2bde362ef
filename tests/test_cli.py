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


def test_the_apps_commands_come_from_entry_points():
    assert {"serve", "train", "runs", "demo"} <= set(registered_commands()), (
        "the cxrl.commands entry points are missing: reinstall the package (make setup)"
    )


def test_the_library_cli_imports_no_app_without_their_entry_points():
    code = (
        "import sys, cxrl.cli as c\n"
        "c.entry_points = lambda group: []\n"
        "sub = next(a for a in c.build_parser()._actions if a.dest == 'command')\n"
        "apps = sorted(m for m in sys.modules if m.split('.')[0] in ('services', 'trainer'))\n"
        "print(sorted(sub.choices), apps)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['evaluate', 'label', 'pretrain', 'reproduce', 'score', 'world'] []"
