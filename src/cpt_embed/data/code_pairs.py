"""(docstring summary, code) pairs from source files, parsed with tree-sitter.

For each function or method with a top-level docstring (Python) or a leading doc comment
(the other languages): x = the docstring's summary (up to the first blank line or
parameter block), y = the function's code without the docstring. Filters follow
CodeSearchNet / CodeXGLUE and count every dropped function by reason.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DOCSTRING_MIN_TOKENS = 3
DOCSTRING_MAX_TOKENS = 256
CODE_MIN_LINES = 3


@dataclass(frozen=True)
class LanguageSpec:
    """How to find functions and their documentation in one language's syntax tree.

    wrappers: parents that carry the function's leading comment (export, decorators).
    between: siblings that may stand between a doc comment and its function (attributes).
    expressions / holders: function expressions count when a holder gives them a name
    (`const f = () => ...`, `exports.f = function ...`, `{f: function ...}`); the holder is
    then the function's code.
    """

    name: str
    module: str
    attribute: str
    functions: frozenset[str]
    doc_prefixes: tuple[str, ...] = ()
    block_doc: bool = False
    wrappers: frozenset[str] = frozenset()
    between: frozenset[str] = frozenset()
    boilerplate: frozenset[str] = frozenset()
    expressions: frozenset[str] = frozenset()
    holders: frozenset[str] = frozenset()


def _spec(name, module, attribute, functions, **kw) -> LanguageSpec:
    return LanguageSpec(
        name,
        module,
        attribute,
        frozenset(functions),
        **{k: frozenset(v) if isinstance(v, set) else v for k, v in kw.items()},
    )


_JS = {"function_declaration", "generator_function_declaration", "method_definition"}
_JS_EXTRA = {
    "block_doc": True,
    "doc_prefixes": ("/**",),
    "boilerplate": {"constructor"},
    "wrappers": {
        "export_statement",
        "lexical_declaration",
        "variable_declaration",
        "expression_statement",
    },
    "expressions": {"function_expression", "function", "arrow_function", "generator_function"},
    "holders": {
        "variable_declarator",
        "assignment_expression",
        "pair",
        "public_field_definition",
        "field_definition",
    },
}
LANGUAGES: dict[str, LanguageSpec] = {
    s.name: s
    for s in [
        _spec(
            "python",
            "tree_sitter_python",
            "language",
            {"function_definition"},
            wrappers={"decorated_definition"},
        ),
        _spec("javascript", "tree_sitter_javascript", "language", _JS, **_JS_EXTRA),
        _spec("typescript", "tree_sitter_typescript", "language_typescript", _JS, **_JS_EXTRA),
        _spec("tsx", "tree_sitter_typescript", "language_tsx", _JS, **_JS_EXTRA),
        _spec(
            "go",
            "tree_sitter_go",
            "language",
            {"function_declaration", "method_declaration"},
            doc_prefixes=("//",),
            boilerplate={"String", "Error"},
        ),
        _spec(
            "java",
            "tree_sitter_java",
            "language",
            {"method_declaration"},
            doc_prefixes=("/**",),
            block_doc=True,
            boilerplate={"toString", "hashCode", "equals"},
        ),
        _spec(
            "ruby",
            "tree_sitter_ruby",
            "language",
            {"method", "singleton_method"},
            doc_prefixes=("#",),
            boilerplate={"initialize", "to_s", "inspect"},
        ),
        _spec(
            "php",
            "tree_sitter_php",
            "language_php",
            {"function_definition", "method_declaration"},
            doc_prefixes=("/**",),
            block_doc=True,
            boilerplate={"__construct", "__toString"},
        ),
        _spec(
            "rust",
            "tree_sitter_rust",
            "language",
            {"function_item"},
            doc_prefixes=("///", "/**"),
            between={"attribute_item"},
            boilerplate={"new", "fmt", "default"},
        ),
    ]
}
EXTENSIONS = {
    ".py": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".java": "java",
    ".rb": "ruby",
    ".php": "php",
    ".rs": "rust",
}


@cache
def parser_for(language: str):
    """A tree-sitter parser for `language` (grammar from its PyPI package)."""
    import tree_sitter

    spec = LANGUAGES[language]
    grammar = getattr(importlib.import_module(spec.module), spec.attribute)()
    return tree_sitter.Parser(tree_sitter.Language(grammar))


@dataclass
class Function:
    """One documented function, before filtering."""

    language: str
    name: str
    docstring: str
    code: str
    start_line: int
    end_line: int


_SECTION = re.compile(
    r"^\s*(?:[@:](?:param|arg|argument|type|return|returns|rtype|raise|raises|throws|see|"
    r"since|example|deprecated|author|var)\b|(?:args|arguments|parameters|params|returns?|"
    r"raises|yields|examples?|notes?|attributes|see also)\s*:?\s*$|-{3,}\s*$|={3,}\s*$)",
    re.IGNORECASE,
)


def summary(docstring: str) -> str:
    """The docstring up to its first blank line or parameter/section block, on one line."""
    lines = []
    for line in inspect.cleandoc(docstring).splitlines():
        if not line.strip() or _SECTION.match(line):
            break
        lines.append(line.strip())
    return " ".join(lines)


def _clean_comment(text: str, spec: LanguageSpec) -> str:
    if spec.block_doc or text.startswith("/**"):
        text = text.removeprefix("/**").removesuffix("*/")
        lines = [re.sub(r"^\s*\*? ?", "", line).rstrip() for line in text.splitlines()]
        return inspect.cleandoc("\n".join(lines))
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        for prefix in sorted(spec.doc_prefixes, key=len, reverse=True):
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix) :]
                break
        out.append(stripped[1:] if stripped.startswith(" ") else stripped)
    return inspect.cleandoc("\n".join(out))


def _leading_doc(node, spec: LanguageSpec) -> str | None:
    outer = node
    while outer.parent is not None and (
        outer.parent.type in spec.wrappers
        # a container that starts with the function (Ruby's class body): its comment
        # stands before the container
        or (outer.prev_named_sibling is None and outer.parent.start_byte == outer.start_byte)
    ):
        outer = outer.parent
    comments, row = [], outer.start_point.row
    sibling = outer.prev_named_sibling
    while sibling is not None:
        if sibling.type in spec.between:
            row, sibling = sibling.start_point.row, sibling.prev_named_sibling
            continue
        if "comment" not in sibling.type or sibling.end_point.row < row - 1:
            break
        text = sibling.text.decode("utf-8", "replace").rstrip("\r\n")  # Rust's end in a newline
        if not text.startswith(spec.doc_prefixes):
            break
        comments.append(text)
        if spec.block_doc or text.startswith("/**"):
            break  # one block comment is the whole doc
        row, sibling = sibling.start_point.row, sibling.prev_named_sibling
    if not comments:
        return None
    return _clean_comment("\n".join(reversed(comments)), spec)


def _python_docstring(node):
    body = node.child_by_field_name("body")
    if body is None or not body.named_children:
        return None, None
    first = body.named_children[0]
    if first.type != "expression_statement" or first.named_children[0].type != "string":
        return None, None
    string = first.named_children[0]
    parts = [c for c in string.children if c.type == "string_content"]
    if not parts or any(c.type == "interpolation" for c in string.children):
        return None, None
    content = string.text[
        parts[0].start_byte - string.start_byte : parts[-1].end_byte - string.start_byte
    ]
    return inspect.cleandoc(content.decode("utf-8", "replace")), first


def _node_code(node, source: bytes, remove=None) -> str:
    line_start = source.rfind(b"\n", 0, node.start_byte) + 1
    indent = source[line_start : node.start_byte]
    if indent.strip():
        indent = b""
    start, end = node.start_byte, node.end_byte
    if remove is None:
        text = indent + source[start:end]
    else:
        cut_start = source.rfind(b"\n", 0, remove.start_byte) + 1
        if source[cut_start : remove.start_byte].strip():
            cut_start = remove.start_byte
        cut_end = remove.end_byte
        if source[cut_end : cut_end + 1] == b"\n":
            cut_end += 1
        text = indent + source[start:cut_start] + source[cut_end:end]
    return textwrap.dedent(text.decode("utf-8", "replace")).rstrip()


def _name(node) -> str:
    for field_name in ("name", "left", "key", "property"):
        name = node.child_by_field_name(field_name)
        if name is not None:
            if name.type == "member_expression":  # exports.parse -> parse
                name = name.child_by_field_name("property") or name
            return name.text.decode("utf-8", "replace")
    return ""


def _function_node(node, spec: LanguageSpec):
    """The node that stands for a function: a declaration, or the holder that names a
    function expression; None for anything else."""
    if node.type in spec.functions:
        return node
    if (
        node.type in spec.expressions
        and node.parent is not None
        and node.parent.type in spec.holders
    ):
        return node.parent
    return None


def extract_functions(source: bytes, language: str) -> tuple[list[Function], int]:
    """Documented functions of one file, and how many functions were skipped because
    tree-sitter could not parse them."""
    spec = LANGUAGES[language]
    tree = parser_for(language).parse(source)
    found, broken = [], 0
    stack = [tree.root_node]
    while stack:
        current = stack.pop()
        stack.extend(reversed(current.children))
        node = _function_node(current, spec)
        if node is not None:
            if node.has_error:
                broken += 1
            else:
                if language == "python":
                    doc, doc_node = _python_docstring(node)
                else:
                    doc, doc_node = _leading_doc(node, spec), None
                if doc is not None:
                    found.append(
                        Function(
                            language,
                            _name(node),
                            doc,
                            _node_code(node, source, doc_node),
                            node.start_point.row + 1,
                            node.end_point.row + 1,
                        )
                    )
    return found, broken


def function_spans(source: bytes, language: str) -> list[tuple[str, int, int]]:
    """(name, first line, last line) of every function and method, documented or not,
    outermost only (a function nested in another is part of it); 1-based lines."""
    spec = LANGUAGES[language]
    tree = parser_for(language).parse(source)
    spans = []
    stack = [tree.root_node]
    while stack:
        current = stack.pop()
        node = _function_node(current, spec)
        if node is not None and not node.has_error:
            first = node.parent if node.parent.type == "decorated_definition" else node
            spans.append((_name(node), first.start_point.row + 1, node.end_point.row + 1))
            continue
        stack.extend(reversed(current.children))
    return sorted(spans, key=lambda span: span[1])


def normalized_hash(text: str) -> str:
    """Hash of the text with case and all whitespace runs ignored."""
    return hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()


_URL_HTML = re.compile(r"https?://|www\.|<\s*/?\s*[a-zA-Z][^>]*>")


@dataclass
class CodeFilter:
    """CodeSearchNet-style filters; `counts` tallies every drop by reason."""

    min_doc_tokens: int = DOCSTRING_MIN_TOKENS
    max_doc_tokens: int = DOCSTRING_MAX_TOKENS
    min_code_lines: int = CODE_MIN_LINES
    held_out: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    counts: Counter = field(default_factory=Counter)

    def reason(self, function: Function, x: str) -> str | None:
        """Why the pair is dropped, or None to keep it (then it counts as seen)."""
        spec = LANGUAGES[function.language]
        name = function.name
        if name.lower().startswith("test"):
            return "test_function"
        if name in spec.boilerplate or (name.startswith("__") and name.endswith("__")):
            return "boilerplate"
        tokens = len(x.split())
        if tokens < self.min_doc_tokens:
            return "docstring_too_short"
        if tokens > self.max_doc_tokens:
            return "docstring_too_long"
        if _URL_HTML.search(x):
            return "docstring_url_or_html"
        letters = [c for c in x if c.isalpha()]
        if letters and sum(c.isascii() for c in letters) / len(letters) < 0.9:
            return "docstring_not_english"
        if sum(1 for line in function.code.splitlines() if line.strip()) < self.min_code_lines:
            return "code_too_short"
        code_key = normalized_hash(function.code)
        if code_key in self.held_out or normalized_hash(x) in self.held_out:
            return "in_evaluation_set"
        if code_key in self.seen:
            return "duplicate"
        self.seen.add(code_key)
        return None

    def keep(self, function: Function, x: str) -> bool:
        reason = self.reason(function, x)
        self.counts["kept" if reason is None else reason] += 1
        return reason is None


def code_pair(function: Function, x: str, repo: str, path: str) -> dict:
    """The pair record written to shards."""
    return {
        "x": x,
        "y": function.code,
        "kind": "code",
        "source": f"{repo}:{path}:{function.start_line}-{function.end_line}",
        "language": function.language,
        "repo": repo,
        "path": path,
        "start_line": function.start_line,
        "end_line": function.end_line,
        "func_name": function.name,
    }


def pairs_from_source(
    source: bytes, language: str, code_filter: CodeFilter, repo: str, path: str
) -> Iterator[dict]:
    """The kept pairs of one parsed file."""
    functions, broken = extract_functions(source, language)
    code_filter.counts["function_parse_error"] += broken
    for function in functions:
        x = summary(function.docstring)
        if code_filter.keep(function, x):
            yield code_pair(function, x, repo, path)


def language_of(path: Path) -> str | None:
    """The language of a source file by its extension, or None."""
    return EXTENSIONS.get(path.suffix.lower())
