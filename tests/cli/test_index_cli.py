"""`cpt search` prints what files hold and what they are named as text, never as terminal
commands: control characters (an escape that clears the screen or sets the title, a C1
CSI) show as escapes such as `\\x1b`, and a newline in a file name cannot break a hit's
line. Error lines show a path's control characters the same way."""

from __future__ import annotations

import json

from bad_inputs import one_line_error, write
from typer.testing import CliRunner

from cpt_embed.cli import app
from cpt_embed.cli.common import for_terminal

runner = CliRunner()
NAME = "evil\nname\x1b]0;pwned\x07.md"
CONTENT = "# Notes\n\nhello \x1b[2J\x1b]0;owned\x07 world\tand \x9b31m more\r\n"


def test_for_terminal_shows_controls_as_escapes():
    assert for_terminal("a\x1b[2J\tb\nc\x9bd\x7f\x00") == "a\\x1b[2J\tb\nc\\x9bd\\x7f\\x00"
    assert for_terminal("a\tb\nc\rd", one_line=True) == "a\\tb\\nc\\rd"
    assert for_terminal("plain unicode: données ✓") == "plain unicode: données ✓"


def test_search_escapes_control_characters_of_files(tiny_bert, tmp_path):
    write(tmp_path / "tree" / NAME, CONTENT)
    built = runner.invoke(
        app,
        ["index", "build", str(tmp_path / "tree"), "-o", str(tmp_path / "idx")]
        + ["-m", str(tiny_bert)],
    )
    assert built.exit_code == 0, built.output
    shown = runner.invoke(app, ["search", str(tmp_path / "idx"), "hello world"])
    assert shown.exit_code == 0, shown.output
    assert not any(char in shown.stdout for char in "\x1b\x07\x9b\r")
    title = next(line for line in shown.stdout.splitlines() if "evil" in line)
    assert "tree/evil\\nname\\x1b]0;pwned\\x07.md:1-3" in title
    assert "hello \\x1b[2J\\x1b]0;owned\\x07 world" in shown.stdout  # a tab shows as spaces
    assert "and \\x9b31m more\n" in shown.stdout
    as_json = runner.invoke(app, ["search", str(tmp_path / "idx"), "hello", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert not any(char in as_json.stdout for char in "\x1b\x07\x9b")
    hit = json.loads(as_json.stdout)[0]
    assert hit["path"] == f"tree/{NAME}" and hit["text"] == CONTENT.strip()


def test_an_error_line_escapes_control_characters_of_a_path(tmp_path):
    path = write(tmp_path / "bad\x1b[2Jname.py", "x = 1\n")
    result = runner.invoke(app, ["embed", str(path), "-o", str(tmp_path / "o.npy")])
    line = one_line_error(result, f"{tmp_path}/bad\\x1b[2Jname.py")
    assert "\x1b" not in result.output and "unknown input format" in line
