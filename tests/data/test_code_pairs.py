"""Docstring/code extraction for every language, and every CodeSearchNet-style filter."""

from __future__ import annotations

import pytest

from cpt_embed.data.code_pairs import (
    LANGUAGES,
    CodeFilter,
    Function,
    extract_functions,
    normalized_hash,
    pairs_from_source,
    summary,
)

# Each snippet: one documented function (expected name, summary, code start/end lines),
# written as real code of that language would be.
SNIPPETS = {
    "python": (
        '''import os


class Store:
    @property
    def size(self, path):
        """Return the size of the file at path.

        :param path: where the file is
        """
        info = os.stat(path)
        return info.st_size
''',
        "size",
        "Return the size of the file at path.",
        6,
        12,
        "def size(self, path):\n    info = os.stat(path)\n    return info.st_size",
    ),
    "javascript": (
        """/**
 * Add two numbers together.
 * @param {number} a first
 */
export function add(a, b) {
  const s = a + b;
  return s;
}
""",
        "add",
        "Add two numbers together.",
        5,
        8,
        "function add(a, b) {\n  const s = a + b;\n  return s;\n}",
    ),
    "typescript": (
        """class Greeter {
  /** Build the greeting for a person. */
  greet(name: string): string {
    const text = `hello ${name}`;
    return text;
  }
}
""",
        "greet",
        "Build the greeting for a person.",
        3,
        6,
        "greet(name: string): string {\n  const text = `hello ${name}`;\n  return text;\n}",
    ),
    "tsx": (
        """/** Render a button with a label. */
function Button(props: { label: string }) {
  const label = props.label;
  return <button>{label}</button>;
}
""",
        "Button",
        "Render a button with a label.",
        2,
        5,
        None,
    ),
    "go": (
        """package sum

// Sum adds all the numbers of xs.
// It returns 0 for an empty slice.
func Sum(xs []int) int {
\tt := 0
\tfor _, x := range xs {
\t\tt += x
\t}
\treturn t
}
""",
        "Sum",
        "Sum adds all the numbers of xs. It returns 0 for an empty slice.",
        5,
        11,
        None,
    ),
    "java": (
        """public class Box {
    /**
     * Returns the width of the box in pixels.
     * @return the width
     */
    @Override
    public int width() {
        int w = this.w;
        return w;
    }
}
""",
        "width",
        "Returns the width of the box in pixels.",
        6,
        10,
        None,
    ),
    "ruby": (
        """class Cart
  # Compute the total price of the cart.
  def total
    sum = items.map(&:price).sum
    sum
  end
end
""",
        "total",
        "Compute the total price of the cart.",
        3,
        6,
        "def total\n  sum = items.map(&:price).sum\n  sum\nend",
    ),
    "php": (
        """<?php
class Mailer {
    /**
     * Send the message to every recipient.
     */
    public function send($message) {
        $sent = 0;
        return $sent;
    }
}
""",
        "send",
        "Send the message to every recipient.",
        6,
        9,
        None,
    ),
    "rust": (
        """/// Parse a number from the input text.
#[inline]
pub fn parse(input: &str) -> i64 {
    let n = input.trim();
    n.parse().unwrap()
}
""",
        "parse",
        "Parse a number from the input text.",
        3,
        6,
        None,
    ),
}


def test_every_language_is_covered():
    assert set(SNIPPETS) == set(LANGUAGES)


@pytest.mark.parametrize("language", sorted(SNIPPETS))
def test_extracts_the_documented_function(language):
    source, name, expected_summary, start, end, code = SNIPPETS[language]
    functions, broken = extract_functions(source.encode(), language)
    assert broken == 0
    assert [f.name for f in functions] == [name]
    function = functions[0]
    assert summary(function.docstring) == expected_summary
    assert (function.start_line, function.end_line) == (start, end)
    if code is not None:
        assert function.code == code
    lines = source.splitlines()
    assert function.code.splitlines()[-1].strip() == lines[end - 1].strip()


@pytest.mark.parametrize(
    "language, source",
    [
        ("javascript", "/* a plain block comment */\nfunction f(a) {\n  return a;\n}\n"),
        ("java", "class A {\n  // a line comment\n  int f() {\n    return 1;\n  }\n}\n"),
        ("rust", "// an ordinary comment\nfn f() -> i32 {\n    1\n}\n"),
        ("python", "def f(a):\n    # a comment, no docstring\n    return a\n"),
        ("php", "<?php\n// plain\nfunction f($a) { return $a; }\n"),
    ],
)
def test_comments_that_are_not_doc_comments_give_nothing(language, source):
    assert extract_functions(source.encode(), language)[0] == []


def test_comment_separated_by_a_blank_line_is_not_a_docstring():
    source = b"// Package note, not about Sum.\n\nfunc Sum(a int) int {\n\treturn a\n}\n"
    assert extract_functions(source, "go")[0] == []


def test_summary_stops_at_blank_lines_and_parameter_blocks():
    assert summary("First line\ncontinues here.\n\nMore detail.") == "First line continues here."
    assert summary("Load it.\n@param x the thing") == "Load it."
    assert summary("Load it.\n:param x: the thing") == "Load it."
    assert summary("Load it.\nArgs:\n    x: thing") == "Load it."
    assert summary("Load it.\nParameters\n----------\nx : int") == "Load it."


def test_broken_functions_are_counted_not_extracted():
    source = b'def ok():\n    """Fine function here."""\n    return 1\n\ndef bad(:\n    """x"""\n'
    functions, broken = extract_functions(source, "python")
    assert [f.name for f in functions] == ["ok"]
    assert broken == 1
    code_filter = CodeFilter()
    assert len(list(pairs_from_source(source, "python", code_filter, "r", "p.py"))) == 0
    assert code_filter.counts["function_parse_error"] == 1


def _function(name="load", doc="Load the configuration from disk.", code=None, language="python"):
    code = code or "def load(path):\n    data = open(path).read()\n    return parse(data)"
    return Function(language, name, doc, code, 1, 3)


@pytest.mark.parametrize(
    "function, reason",
    [
        (_function(name="test_load"), "test_function"),
        (_function(name="TestLoad", language="go"), "test_function"),
        (_function(name="__repr__"), "boilerplate"),
        (_function(name="toString", language="java"), "boilerplate"),
        (_function(name="initialize", language="ruby"), "boilerplate"),
        (_function(doc="Load it"), "docstring_too_short"),
        (_function(doc="word " * 300), "docstring_too_long"),
        (_function(doc="See https://example.com for the format."), "docstring_url_or_html"),
        (_function(doc="Load the <b>configuration</b> file now."), "docstring_url_or_html"),
        (_function(doc="Загрузить конфигурацию с диска сейчас."), "docstring_not_english"),
        (_function(code="def load(path):\n    return 1"), "code_too_short"),
    ],
)
def test_each_filter_drops_with_its_reason(function, reason):
    code_filter = CodeFilter()
    assert code_filter.reason(function, summary(function.docstring)) == reason


def test_duplicates_and_evaluation_items_are_dropped():
    code_filter = CodeFilter()
    function = _function()
    x = summary(function.docstring)
    assert code_filter.keep(function, x)
    respaced = _function(code=function.code.replace("    ", "\t"))
    assert code_filter.reason(respaced, x) == "duplicate"
    held = CodeFilter(held_out={normalized_hash(function.code)})
    assert held.reason(function, x) == "in_evaluation_set"
    held = CodeFilter(held_out={normalized_hash(x)})
    assert held.reason(function, x) == "in_evaluation_set"
    assert code_filter.counts["kept"] == 1


def test_named_function_expressions_count_in_javascript():
    source = b"""/** Add two numbers together. */
const add = (a, b) => {
  return a + b;
};
/** Read the whole config file. */
exports.read = function (path) {
  return fs.readFileSync(path);
};
module.exports = {
  /** Close every open handle. */
  close: function () { return 1; },
};
[1, 2].map(function (x) { return x; });
"""
    functions, _ = extract_functions(source, "javascript")
    assert [(f.name, summary(f.docstring)) for f in functions] == [
        ("add", "Add two numbers together."),
        ("read", "Read the whole config file."),
        ("close", "Close every open handle."),
    ]
    assert functions[1].code.startswith("exports.read = function (path) {")
