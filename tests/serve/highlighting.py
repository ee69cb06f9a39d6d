"""The search page's shading of an explained hit, case by case: (hit text, explanation,
the HTML expected), run by test_page.py in Chromium and by test_page_highlight.py in node."""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "src" / "cpt_embed" / "serve" / "page.html"


def _explained(spans: list, scores: list[float], lines: list[tuple[int, float]]) -> dict:
    """The parts of a hit's `explanation` that the page reads."""
    document = {
        "spans": spans,
        "scores": scores,
        "lines": [{"line": line, "score": score} for line, score in lines],
    }
    return {"similarity": 0.5, "document": document}


def _gutter(line: int | None, shading: str, score: str = "") -> str:
    if line is None:
        return '<span class="ln line-none"></span>'
    return f'<span class="ln line-{shading}" title="line {line}: {score}">{line}</span>'


_TWENTY = "\n".join(f"l{n}" for n in range(20))
_SIXTEEN = [(101 + n, {9: -0.3, 14: 0.3}.get(n, 0.0)) for n in range(16)]
_WINDOW = [  # lines 8-19 of _TWENTY: the best line (14) third but for the end of the text
    _gutter(109, "none", "+0.0000") + 'l<span class="up4">8</span>',
    _gutter(110, "down4", "-0.3000") + '<span class="up4">l</span>9',
    *(_gutter(101 + n, "none", "+0.0000") + f"l{n}" for n in range(10, 14)),
    _gutter(115, "up4", "+0.3000") + "l14",
    _gutter(116, "none", "+0.0000") + "l15",
    *(_gutter(None, "") + f"l{n}" for n in range(16, 20)),  # past the explained lines
]

# (hit text, its explanation, the HTML expected)
CASES = [
    # four steps of the largest |score|: 0.1 of 0.4 is step 1, -0.2 step 2 of red, 0.01
    # (under 5%) unshaded; the gutters by the lines' scores
    (
        "def add(a, b):\n    return a + b",
        _explained(
            [None, [0, 3], [4, 7], [19, 25], [30, 31], None],
            [0.0, 0.1, 0.4, -0.2, 0.01, 0.0],
            [(10, 0.5), (11, -0.19)],
        ),
        _gutter(10, "up4", "+0.5000")
        + '<span class="up1">def</span> <span class="up4">add</span>(a, b):\n'
        + _gutter(11, "down2", "-0.1900")
        + '    <span class="down2">return</span> a + b',
    ),
    # spans count code points (the emoji is one); HTML in the text is escaped, in and out
    # of shaded tokens
    (
        "\U0001f600 <a href='x'>&amp;</a>",
        _explained([[2, 4], [14, 19]], [1.0, -0.5], [(1, 0.5)]),
        _gutter(1, "up4", "+0.5000")
        + '\U0001f600 <span class="up4">&lt;a</span> href=&#39;x&#39;&gt;'
        + '<span class="down2">&amp;amp;</span>&lt;/a&gt;',
    ),
    # twelve lines around the best one; a token across a line break shaded on both lines;
    # lines past the explanation (cut at max_length) without a number
    (_TWENTY, _explained([[25, 28]], [1.0], _SIXTEEN), "\n".join(_WINDOW)),
]


def page_script(element_id: str) -> str:
    """The text of the page's `<script id=element_id>`."""
    html = PAGE.read_text("utf-8")
    start = html.index(f'<script id="{element_id}">')
    return html[html.index(">", start) + 1 : html.index("</script>", start)]
