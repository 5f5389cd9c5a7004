"""``pila lab <command>``: one way for every lab command to report a user's mistake (one
line on stderr, exit status 2, no traceback), and bugs still raise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pila.cli import main as pila_main
from pila.lab.cli import LAB_COMMANDS, ArgumentParser, UsageError, run_command


def _one_line(err: str, command: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pila lab {command}: error:"), err
    for needle in needles:
        assert needle in lines[0], err


BAD = [
    # the parser's own errors
    ("pretrain", ["--out", "x", "--bogus"], "--bogus"),
    ("pretrain", ["--out", "x", "--vae-steps", "many"], "many"),
    ("evaluate", ["--videos", "."], "--out"),
    ("evaluate", ["--videos", ".", "--out", "x", "--bogus"], "--bogus"),
    ("ablate", ["--variants", "full"], "--out"),
    ("ablate", ["--out", "x", "--seeds", "three"], "three"),
    # the command's own checks
    ("pretrain", ["--out", "x", "--num-frames", "32"], "num_frames"),
    ("pretrain", ["--out", "x", "--threads", "0"], "--threads"),
    ("evaluate", ["--videos", "/nonexistent/folder", "--out", "x"], "/nonexistent/folder"),
    ("evaluate", ["--videos", ".", "--out", "x", "--scene", "volcano"], "volcano"),
    ("ablate", ["--out", "x", "--seeds", "0"], "--seeds"),
    ("ablate", ["--out", "x", "--variants", "volcano"], "volcano"),
    ("calibrate", ["--crf", "99"], "99"),
    ("calibrate", ["--scenes", "volcano", "--out", "x.json"], "volcano"),
]


@pytest.mark.parametrize(("command", "argv", "needle"), BAD)
def test_every_lab_command_reports_a_bad_argument_in_one_line(command, argv, needle, capsys):
    assert pila_main(["lab", command, *argv]) == 2
    _one_line(capsys.readouterr().err, command, needle)


def test_the_table_of_bad_arguments_covers_every_lab_command():
    assert {command for command, _, _ in BAD} == set(LAB_COMMANDS)


@pytest.mark.parametrize("command", sorted(LAB_COMMANDS))
def test_help_exits_0(command, capsys):
    assert pila_main(["lab", command, "--help"]) == 0
    assert f"usage: pila lab {command}" in capsys.readouterr().out


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "pila", "lab", "evaluate", "--videos", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    _one_line(run.stderr, "evaluate", "--out")


def test_run_command_turns_usage_errors_into_exit_2_and_lets_bugs_raise(capsys):
    parser = ArgumentParser(prog="pila lab demo-free")
    parser.add_argument("--n", type=int, required=True)

    def body(argv: list[str]) -> int:
        args = parser.parse_args(argv)
        if args.n < 0:
            raise UsageError(f"--n must be ≥ 0, got {args.n}")
        if args.n == 13:
            raise KeyError("a bug")
        return 0

    assert run_command("pila lab x", body, ["--n", "3"]) == 0
    assert run_command("pila lab x", body, ["--n", "-1"]) == 2
    assert capsys.readouterr().err == "pila lab x: error: --n must be ≥ 0, got -1\n"
    assert run_command("pila lab x", body, ["--n", "many"]) == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err
    with pytest.raises(KeyError, match="a bug"):
        run_command("pila lab x", body, ["--n", "13"])
    assert issubclass(UsageError, ValueError)  # a user error as pila.cli counts them
