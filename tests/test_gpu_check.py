"""benchmarks/gpu_check.sh runs as written: every spikeyolo / benchmarks command line in it parses with the
current argparse of what it calls (the parsers are built from the code, not copied here)."""

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path
from unittest import mock

import pytest

from spikeyolo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a bash script as argument lists: continuation lines joined, heredoc bodies skipped,
    pipelines and redirections cut, ``$VAR`` / ``"$VAR/..."`` expanded to placeholder paths."""
    lines, out, heredoc = text.replace("\\\n", " ").splitlines(), [], None
    for line in lines:
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        if "<<'" in line:
            heredoc = line.split("<<'")[1].split("'")[0]
            continue
        line = line.split("|")[0].split("2>&1")[0].replace("$TMP", "/tmp/gpu_check").replace("$OUT", "/tmp/out")
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(shlex.split(line))
    return out


class _Parsed(Exception):
    """Raised instead of running a script once its command line has parsed."""


def parse_script(path: Path, argv: list[str]) -> None:
    """Parse ``argv`` with the parser ``path``'s ``main()`` builds, stopping before it runs anything (a stale
    option raises SystemExit, as on the command line)."""
    sys.path.insert(0, str(path.parent))  # benchmarks import their siblings
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    real = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        real(self, argv, namespace)
        raise _Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_only), \
            mock.patch.object(sys, "argv", [str(path), *argv]):
        try:
            module.main()
        except _Parsed:
            return
    raise AssertionError(f"{path}: main() returned without parsing its command line")


def parse_python_command(argv: list[str]) -> str | None:
    """Parse one ``python3 ...`` command with the parser of what it runs; returns what it ran (None: not ours)."""
    if argv[:3] == ["python3", "-m", "spikeyolo"]:
        build_parser().parse_args(argv[3:])
        return f"spikeyolo {argv[3]}"
    if len(argv) > 1 and argv[0] == "python3" and argv[1].startswith("benchmarks/"):
        parse_script(ROOT / argv[1], argv[2:])
        return argv[1]
    return None


def test_every_command_line_parses_with_the_current_options():
    ran = [parse_python_command(c) for c in shell_commands(SCRIPT.read_text()) if c and c[0] == "python3"]
    ran = [r for r in ran if r is not None]
    # what the script checks: training and validation through the CLI, and the GPU timing script
    assert {"spikeyolo train", "spikeyolo val"} <= set(ran) and any(r.startswith("benchmarks/") for r in ran)


def test_a_stale_option_is_caught():
    stale = ["python3", "benchmarks/infer_gpu.py", "--device", "cuda", "--rounds-that-do-not-exist", "3"]
    with pytest.raises(SystemExit):
        parse_python_command(stale)
    assert shell_commands("a \\\n  --b c | tee x\ncat <<'PY'\nignored\nPY\n") == [["a", "--b", "c"]]
