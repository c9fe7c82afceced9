"""Every code block a reader of README.md or docs/*.md might paste is checked:

- ``python``: compiles, runs (in a fresh module namespace, in a temporary directory), and every
  global name its functions and classes use is imported or defined (a method body only runs when
  called: a driver class missing ``from pathlib import Path`` must still fail here);
- ``sh``: every ``dockvol ...`` command (also ``./dev dockvol ...``, ``./dev serve ...`` and
  ``.venv/bin/dockvol ...``) parses with dockvol's own argparse parser; a lone ``...`` stands
  for "more flags" and is dropped; other commands are exercised elsewhere (engine tests);
- ``yaml``: parses with a real YAML parser (Debian's python3-yaml, which ``docker-compose``
  installs: PyYAML is no dependency of dockvol), and a compose file (``services:``) also
  passes ``docker-compose config``;
- ``json``: parses.

A block the docs show deliberately without running it carries ``<!-- not-run: REASON -->`` on
the line before its fence; that marker is the only way to skip one. A block with no language
or another language fails: label it or mark it.
"""

from __future__ import annotations

import builtins
import contextlib
import dis
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import types
from pathlib import Path

import pytest

from tests.docs.blocks import NOT_RUN, REPO, Block, all_blocks, load_yaml, markdown_files

PYTHON = {"python", "py"}
SHELL = {"sh", "bash", "shell", "console"}
YAML = {"yaml", "yml"}
JSON = {"json"}

BLOCKS = all_blocks()


def _param(b: Block) -> object:
    return pytest.param(b, id=f"{b.where}-{b.lang or 'none'}")


# -- python -------------------------------------------------------------------------------


def undefined_globals(code: types.CodeType, namespace: dict[str, object]) -> set[str]:
    """Global names the code (and every function and class body in it) loads that it never
    defines (its module-level assignments, imports, ``global`` stores, what ``namespace`` holds
    after running) and that are not builtins. A class body's own names are local to it."""
    defined = set(namespace)
    defined |= {i.argval for i in dis.get_instructions(code) if i.opname == "STORE_NAME"}
    missing: set[str] = set()
    stack = [code]
    while stack:
        co = stack.pop()
        ins = list(dis.get_instructions(co))
        local = {i.argval for i in ins if i.opname == "STORE_NAME"} if co is not code else set()
        defined |= {i.argval for i in ins if i.opname == "STORE_GLOBAL"}
        for i in ins:
            if i.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(i.argval, str):
                name = i.argval
                if name not in local and not hasattr(builtins, name):
                    missing.add(name)
        stack.extend(c for c in co.co_consts if isinstance(c, types.CodeType))
    return missing - defined


def python_problem(b: Block, tmp: Path) -> str | None:
    try:
        # dont_inherit: this module's `from __future__ import annotations` must not hide an
        # annotation naming something the block never imported.
        code = compile(b.text, b.where, "exec", dont_inherit=True)
    except SyntaxError as e:
        return f"does not compile: {e}"
    namespace: dict[str, object] = {"__name__": f"docblock_{b.line}"}
    problems = []
    cwd = Path.cwd()
    os.chdir(tmp)
    try:
        exec(code, namespace)
    except Exception as e:
        problems.append(f"does not run: {type(e).__name__}: {e}")
    finally:
        os.chdir(cwd)
    missing = undefined_globals(code, namespace)
    if missing:
        problems.append(f"uses names it never imports or defines: {', '.join(sorted(missing))}")
    return "; ".join(problems) or None


# -- sh -----------------------------------------------------------------------------------

_SEPARATORS = {"&&", "||", ";", "|", "&", ";;"}


def shell_commands(script: str) -> list[list[str]]:
    """Simple commands of a shell snippet: continuations joined, comments, redirections
    (and their targets) and leading ``VAR=value`` assignments dropped."""
    commands: list[list[str]] = []
    for raw in re.sub(r"\\\n", " ", script).splitlines():
        line = raw.strip()
        if line.startswith("$ "):  # a console prompt
            line = line[2:]
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        lex.commenters = "#"
        current: list[str] = []
        skip_next = False
        for tok in lex:
            if skip_next:
                skip_next = False
            elif tok in _SEPARATORS:
                commands.append(current)
                current = []
            elif tok[0] in "<>":
                skip_next = True
            else:
                current.append(tok)
        commands.append(current)
    out = []
    for argv in commands:
        while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
            argv = argv[1:]
        if argv:
            out.append(argv)
    return out


def dockvol_argv(argv: list[str]) -> list[str] | None:
    """The arguments to ``dockvol`` if this command runs it, else None."""
    if argv[0] == "sudo":
        argv = argv[1:]
    if not argv:
        return None
    if argv[0] == "dockvol" or argv[0].endswith("/bin/dockvol"):
        args = argv[1:]
    elif argv[0] == "./dev" and argv[1:2] == ["dockvol"]:
        args = argv[2:]
    elif argv[0] == "./dev" and argv[1:2] == ["serve"]:
        args = argv[1:]  # ./dev serve passes its flags to dockvol serve
    else:
        return None
    return [a for a in args if a != "..."]


def argparse_problem(args: list[str]) -> str | None:
    from dockvol._cli.main import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser(args[0] if args else None).parse_args(args)
    except SystemExit as e:
        if e.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1] if err.getvalue() else str(e)
    return None


def shell_problem(b: Block) -> str | None:
    bad = []
    for argv in shell_commands(b.text):
        args = dockvol_argv(argv)
        if args is None:
            continue
        problem = argparse_problem(args)
        if problem:
            bad.append(f"`dockvol {shlex.join(args)}`: {problem}")
    return "; ".join(bad) or None


# -- yaml, json ---------------------------------------------------------------------------


def yaml_problem(b: Block) -> str | None:
    try:
        doc = load_yaml(b.text)
    except ValueError as e:
        return f"is not YAML: {e}"
    if isinstance(doc, dict) and "services" in doc:
        compose = shutil.which("docker-compose")
        if compose is None:
            raise AssertionError("docker-compose missing: ./dev installs Debian's docker-compose")
        r = subprocess.run(
            [compose, "-f", "-", "config", "-q"], input=b.text, capture_output=True, text=True,
            timeout=60, env={**os.environ, "DOCKER_HOST": "unix:///nonexistent"},
        )  # fmt: skip
        if r.returncode != 0:
            return f"is not a valid compose file: {(r.stderr or r.stdout).strip()}"
    return None


# -- the tests ----------------------------------------------------------------------------


# Blocks marked not-run (diagrams, output samples) are not test items: the marker itself is
# checked by test_every_not_run_marker_has_a_reason_and_a_block.
@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS if not b.not_run])
def test_code_block(block: Block, tmp_path: Path) -> None:
    lang = block.lang
    if lang in PYTHON:
        problem = python_problem(block, tmp_path)
    elif lang in SHELL:
        problem = shell_problem(block)
    elif lang in YAML:
        problem = yaml_problem(block)
    elif lang in JSON:
        try:
            json.loads(block.text)
            problem = None
        except ValueError as e:
            problem = f"is not JSON: {e}"
    else:
        problem = (
            f"has {'no language' if not lang else f'language {lang!r}'}: label it "
            f"(python, sh, yaml, json) or put <!-- not-run: REASON --> on the line before it"
        )
    assert problem is None, f"{block.where}: ```{lang} block {problem}"


def test_every_not_run_marker_has_a_reason_and_a_block() -> None:
    bad = []
    for path in markdown_files():
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            m = NOT_RUN.match(line)
            if m is None:
                continue
            where = f"{path.relative_to(REPO)}:{n + 1}"
            if not m["reason"]:
                bad.append(f"{where}: not-run marker without a reason")
            if n + 1 >= len(lines) or not lines[n + 1].lstrip().startswith(("```", "~~~")):
                bad.append(f"{where}: not-run marker not directly before a code fence")
    assert not bad, "\n".join(bad)


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The checks themselves fail where they must (a method using an unimported name, an
    unknown flag, broken YAML), so a passing block means something."""
    snippet = "class D:\n    def mount(self):\n        return run(Path('x'))\n"
    problem = python_problem(Block("x.md", 1, "python", snippet, None), tmp_path)
    assert problem is not None and "Path, run" in problem
    assert argparse_problem(["serve", "--no-such-flag"]) is not None
    assert argparse_problem(["serve", "--name", "x"]) is None
    assert shell_commands("A=1 dockvol call \\\n  caps > out.json && ./dev dockvol status # x") == [
        ["dockvol", "call", "caps"],
        ["./dev", "dockvol", "status"],
    ]
    assert yaml_problem(Block("x.md", 1, "yaml", "a: [1\n", None)) is not None
