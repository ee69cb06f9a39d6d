"""The search page's highlighting, case by case: (hit text, query, the HTML expected),
run by test_page.py in Chromium and by test_page_highlight.py in node."""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "src" / "cpt_embed" / "serve" / "page.html"

CASES = [
    # whole words only: "the" inside "Either", "old" inside "folder"; "the" is a stop word
    (
        "Either the folder or the old file",
        "the old",
        "Either the folder or the <mark>old</mark> file",
    ),
    (
        "The old folder, THE OLD ONE",
        "old folder.",
        "The <mark>old</mark> <mark>folder</mark>, THE <mark>OLD</mark> ONE",
    ),
    # Unicode letters are word characters: "pfel" is no word of "Äpfel"
    (
        "Äpfel und pfel; größe GRÖßE",
        "pfel Größe",
        "Äpfel und <mark>pfel</mark>; <mark>größe</mark> <mark>GRÖßE</mark>",
    ),
    # terms of 1-2 letters and stop words alone: nothing marked
    ("it is an ok id of the file", "it is an ok id of the", "it is an ok id of the file"),
    # regex characters are the terms' own
    (
        "call foo.bar() not fooXbar; a+b not aab; x[y",
        "foo.bar a+b x[y",
        "call <mark>foo.bar</mark>() not fooXbar; <mark>a+b</mark> not aab; <mark>x[y</mark>",
    ),
    # HTML in the text is escaped; a term never matches inside an entity or the page's tags
    (
        '<b class="x">a & b</b> <mark>',
        "class mark",
        "&lt;b <mark>class</mark>=&quot;x&quot;&gt;a &amp; b&lt;/b&gt; &lt;<mark>mark</mark>&gt;",
    ),
    (
        "&amp; 'quot' <script>",
        "amp quot script",
        "&amp;<mark>amp</mark>; &#39;<mark>quot</mark>&#39; &lt;<mark>script</mark>&gt;",
    ),
]


def page_script(element_id: str) -> str:
    """The text of the page's `<script id=element_id>`."""
    html = PAGE.read_text("utf-8")
    start = html.index(f'<script id="{element_id}">')
    return html[html.index(">", start) + 1 : html.index("</script>", start)]
