"""Properties of the docstring/code extractor on generated programs in every language: it
finds the documented function with its name, docstring and lines, gives its code without
the docstring, and neither crashes nor gives lines outside the file on damaged sources."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpt_embed.data.code_pairs import (
    LANGUAGES,
    CodeFilter,
    extract_functions,
    function_spans,
    summary,
)

# The quick tests run in `make test`; the `slow` fuzz run (env CPT_FUZZ_EXAMPLES) in
# `make test-all`.
FUZZ_EXAMPLES = int(os.environ.get("CPT_FUZZ_EXAMPLES", "4000"))
SETTINGS = settings(max_examples=150, deadline=None, database=None)


@dataclass(frozen=True)
class Style:
    """How one language writes a documented function: `doc` is a docstring inside the
    function (Python) or the comment before it; `{n}` in headers is the function's name."""

    header: str
    body: tuple[str, ...]
    footer: tuple[str, ...]
    doc: str  # '"""', "/**" or a line comment prefix
    step: str = "    "
    prologue: tuple[str, ...] = ()
    # (opening line, closing line, header inside it) of the blocks a function may sit in
    containers: tuple[tuple[str, str, str], ...] = ()
    # a line that may stand between the doc comment and the header; its function's span
    # starts there when it is Python's decorator
    decorator: str = ""


STYLES = {
    "python": Style(
        "def {n}(a):",
        ("x = a + 1", "return x"),
        (),
        '"""',
        containers=(("class C:", "", ""),),
        decorator="@decorator",
    ),
    "javascript": Style(
        "function {n}(a) {",
        ("const x = a + 1;", "return x;"),
        ("}",),
        "/**",
        "  ",
        containers=(("class C {", "}", "{n}(a) {"), ("export default {", "};", "{n}(a) {")),
    ),
    "typescript": Style(
        "function {n}(a: number): number {",
        ("const x = a + 1;", "return x;"),
        ("}",),
        "/**",
        "  ",
        containers=(("class C {", "}", "{n}(a: number): number {"),),
    ),
    "tsx": Style("function {n}(a) {", ("return <b>{a}</b>;",), ("}",), "/**", "  "),
    "go": Style(
        "func {n}(a int) int {", ("x := a + 1", "return x"), ("}",), "//", "\t", ("package p",)
    ),
    "java": Style(
        "public int {n}(int a) {",
        ("int x = a + 1;", "return x;"),
        ("}",),
        "/**",
        containers=(("class C {", "}", ""), ("interface I {", "}", "default int {n}(int a) {")),
    ),
    "ruby": Style(
        "def {n}(a)", ("x = a + 1", "x"), ("end",), "#", "  ", containers=(("class C", "end", ""),)
    ),
    "php": Style(
        "function {n}($a) {",
        ("$x = $a + 1;", "return $x;"),
        ("}",),
        "/**",
        prologue=("<?php",),
        containers=(("class C {", "}", "public function {n}($a) {"),),
    ),
    "rust": Style(
        "fn {n}(a: i32) -> i32 {",
        ("let x = a + 1;", "x"),
        ("}",),
        "///",
        containers=(("impl C {", "}", "pub fn {n}(a: i32) -> i32 {"),),
        decorator="#[inline]",
    ),
}

# Docstring lines: each starts with a word (no parameter or section line), then text with
# no character that could end a comment or string.
WORD_CHARS = st.characters(categories=("L", "N"), include_characters=" .,;:-+=()!")
doc_line = st.builds(
    lambda i, rest: f"L{i} {rest}".strip(), st.integers(0, 99), st.text(WORD_CHARS, max_size=30)
)


def _trimmed(lines: list[str]) -> list[str]:
    """`lines` up to the last one that holds text."""
    return lines[: max(i for i, line in enumerate(lines) if line) + 1]


# paragraphs parted by blank lines; the first and last lines hold text
doc_lines = st.builds(
    lambda first, rest: _trimmed([first, *rest]),
    doc_line,
    st.lists(st.one_of(doc_line, st.just("")), max_size=5),
)
names = st.from_regex(r"f_[a-z0-9_]{0,8}", fullmatch=True)  # never a keyword (fn)


@dataclass(frozen=True)
class Program:
    """A generated source file holding one documented function, and what should come out."""

    language: str
    source: str
    name: str
    docstring: str
    code: str
    start_line: int
    end_line: int
    span_start: int


def _doc_comment(style: Style, lines: list[str]) -> list[str]:
    if style.doc == '"""':
        return [f'"""{lines[0]}', *lines[1:], '"""'] if len(lines) > 1 else [f'"""{lines[0]}"""']
    if style.doc == "/**":
        if len(lines) == 1:
            return [f"/** {lines[0]} */"]
        return ["/**", *(f" * {line}".rstrip() for line in lines), " */"]
    return [f"{style.doc} {line}".rstrip() for line in lines]


@st.composite
def programs(draw) -> Program:
    """A file (maybe a prologue and blank lines) with one documented function, maybe
    decorated, maybe inside a class."""
    language = draw(st.sampled_from(sorted(STYLES)))
    style = STYLES[language]
    name, lines = draw(names), draw(doc_lines)
    container = draw(st.sampled_from([None, *style.containers]))
    indent = style.step if container else ""
    header = (container[2] if container and container[2] else style.header).replace("{n}", name)
    doc = _doc_comment(style, lines)
    inner = [style.step + line for line in style.body]
    function = [header, *inner, *style.footer]
    if style.doc == '"""':
        function = [header, *(style.step + line if line else "" for line in doc), *inner]
        before = []
    else:
        before = doc
    source = [*style.prologue, *draw(st.lists(st.just(""), max_size=2))]
    if container:
        source.append(container[0])
    source += [indent + line if line else "" for line in before]
    decorated = bool(style.decorator) and draw(st.booleans())
    if decorated:
        source.append(indent + style.decorator)
    start = len(source) + 1
    source += [indent + line if line else "" for line in function]
    end = len(source)
    if container and container[1]:
        source.append(container[1])
    return Program(
        language,
        "\n".join(source) + "\n",
        name,
        "\n".join(lines),
        "\n".join([header, *inner, *style.footer]),
        start,
        end,
        start - 1 if decorated and style.decorator.startswith("@") else start,
    )


def test_every_language_has_a_style():
    assert set(STYLES) == set(LANGUAGES)


@SETTINGS
@given(program=programs())
def test_the_documented_function_comes_out_whole_without_its_docstring(program):
    source = program.source.encode("utf-8")
    functions, broken = extract_functions(source, program.language)
    assert broken == 0, program.source
    assert len(functions) == 1, program.source
    function = functions[0]
    assert function.name == program.name
    assert function.docstring == program.docstring
    assert summary(function.docstring) == " ".join(program.docstring.split("\n\n")[0].split("\n"))
    assert function.code == program.code
    assert (function.start_line, function.end_line) == (program.start_line, program.end_line)
    assert extract_functions(source, program.language) == (functions, broken)
    assert function_spans(source, program.language) == [
        (program.name, program.span_start, program.end_line)
    ]


@st.composite
def damaged(draw) -> bytes:
    """A generated program with a few bytes replaced, inserted or deleted."""
    data = bytearray(draw(programs()).source.encode("utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from([*b"{}()[]\"'`#/*\n\t :;=\\", 0, 0xFF, 0xC3]))
        if edit == "insert":
            data.insert(at, byte)
        elif at < len(data):
            data[at : at + 1] = b"" if edit == "delete" else bytes([byte])
    return bytes(data)


def _check_any_source(source: bytes) -> None:
    """What holds for any bytes in any language: the same answer each time, lines within
    the file, a function's code ending on one of its lines, a one-line summary that the
    filters take, spans in order."""
    line_count = source.count(b"\n") + 1
    lines = source.decode("utf-8", "replace").split("\n")
    code_filter = CodeFilter()
    for language in LANGUAGES:
        functions, broken = extract_functions(source, language)
        assert broken >= 0
        assert extract_functions(source, language) == (functions, broken)
        for function in functions:
            assert 1 <= function.start_line <= function.end_line <= line_count
            assert isinstance(function.docstring, str) and isinstance(function.code, str)
            assert function.code.strip()
            last = function.code.split("\n")[-1].strip()
            inside = lines[function.start_line - 1 : function.end_line]
            assert any(last in line for line in inside)
            x = summary(function.docstring)
            assert "\n" not in x
            code_filter.keep(function, x)
        spans = function_spans(source, language)
        assert spans == sorted(spans, key=lambda span: span[1])
        assert all(1 <= first <= last <= line_count for _, first, last in spans)


@SETTINGS
@given(source=damaged())
def test_damaged_sources_never_crash_the_extractor(source):
    _check_any_source(source)


@SETTINGS
@given(source=st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_extractor(source):
    _check_any_source(source)


@pytest.mark.slow
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None)
@given(source=st.one_of(damaged(), st.binary(max_size=400)))
def test_fuzz_extractor(source):
    _check_any_source(source)
