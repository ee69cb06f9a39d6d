"""The search page in headless Chromium (Debian's chromium + chromedriver, via selenium):
type a query, see the hits, then each hit's lines and tokens shaded by the server's
explanation of its similarity; the search is in the page's address (?q=...), so a link runs
it and back and forward step through searches. A screenshot lands in docs/search-page.png
when asked for."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
from highlighting import CASES
from servers import served

from cpt_embed.search.build import build_index
from cpt_embed.search.explain import explain_hits
from cpt_embed.search.query import Searcher
from cpt_embed.serve.app import create_app

webdriver = pytest.importorskip("selenium.webdriver")
if not (shutil.which("chromium") and shutil.which("chromedriver")):
    pytest.skip(
        "chromium and chromedriver are not installed (make browser)", allow_module_level=True
    )

REPO = Path(__file__).resolve().parents[2]
MOVING = "Either the folder or the old file is moved; the older copy is deleted.\n"
COOKING = "Boil the water, then fold the dough and bake it.\n"


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def notes_index(encoder, tmp_path_factory) -> Path:
    """An index of two notes: markdown about files, text about cooking."""
    notes = tmp_path_factory.mktemp("notes")
    (notes / "moving.md").write_text(f"# Moving files\n\n{MOVING}", encoding="utf-8")
    (notes / "cooking.txt").write_text(COOKING, encoding="utf-8")
    index = notes.parent / f"{notes.name}-index"
    build_index([notes], index, encoder, model_name="default")
    return index


@pytest.fixture(scope="module")
def notes_url(encoder, notes_index):
    """The page over `notes_index`."""
    with served(
        create_app(encoder, "default", searcher=Searcher(notes_index, encoder, "default"))
    ) as url:
        yield url


def _shown(browser) -> tuple[str, str, list[str]]:
    """The query box, the language box and the hits' file names, read at one moment."""
    return tuple(
        browser.execute_script(
            "return [document.getElementById('query').value,"
            " document.getElementById('lang').value,"
            " [...document.querySelectorAll('.hit .where')]"
            ".map(e => e.textContent.split(':')[0].split('/').pop())]"
        )
    )


def _wait_for(browser, shown: tuple[str, str, list[str]]) -> None:
    """Wait until the search of `shown`'s query has answered, then compare all of it."""
    from selenium.webdriver.support.ui import WebDriverWait

    answered = (
        "return document.getElementById('query').value === arguments[0]"
        " && / hits in /.test(document.getElementById('status').textContent)"
    )
    WebDriverWait(browser, 30).until(lambda _: browser.execute_script(answered, shown[0]))
    assert _shown(browser) == shown


def _search(browser, query: str) -> None:
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys(query)
    browser.find_element(By.TAG_NAME, "button").click()


def test_the_page_shows_hits_for_a_typed_query(encoder, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    build_index(
        [REPO / "src" / "cpt_embed" / "search"], tmp_path / "idx", encoder, model_name="default"
    )
    app = create_app(encoder, "default", searcher=Searcher(tmp_path / "idx", encoder, "default"))
    with served(app) as url:
        browser.get(f"{url}/")
        _search(browser, "split a markdown file into sections at its headings")
        WebDriverWait(browser, 30).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".hit"))
        )
        hits = browser.find_elements(By.CSS_SELECTOR, ".hit")
        assert len(hits) == 10
        assert "search/chunks.py" in hits[0].find_element(By.CLASS_NAME, "where").text
        assert "_sections" in hits[0].text
        _wait_explained(browser)
        assert hits[0].find_elements(By.CSS_SELECTOR, "pre .up4")  # its best token
        assert "_sections" in hits[0].text
        if os.environ.get("CPT_SCREENSHOT"):
            browser.save_screenshot(os.environ["CPT_SCREENSHOT"])


def _wait_explained(browser) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    explained = "return / explained in /.test(document.getElementById('status').textContent)"
    WebDriverWait(browser, 60).until(lambda _: browser.execute_script(explained))


def test_shading_in_the_browser(browser, notes_url):
    browser.get(f"{notes_url}/")
    shaded = browser.execute_script(
        "return arguments[0].map(([text, explanation]) => explainedHtml(text, explanation))",
        [[text, explanation] for text, explanation, _ in CASES],
    )
    assert shaded == [expected for _, _, expected in CASES]


def test_a_search_shades_what_the_explanation_scores(encoder, browser, notes_index, notes_url):
    from selenium.webdriver.common.by import By

    browser.get(f"{notes_url}/")
    _search(browser, "the old folder")
    _wait_for(browser, ("the old folder", "", ["moving.md", "cooking.txt"]))
    assert browser.current_url == f"{notes_url}/?q=the+old+folder"
    _wait_explained(browser)
    shown = browser.find_element(By.CSS_SELECTOR, ".hit pre")
    # the oracle: the same hit explained here, its shading worked out from the scores
    (hit,) = Searcher(notes_index, encoder, "default").search("the old folder", 1)
    (explained,) = explain_hits(encoder, "the old folder", [hit])
    side = explained.document
    scale = max(abs(score) for score in side.scores)
    expected = [
        (hit.text[span[0] : span[1]], f"up{math.ceil(4 * score / scale)}")
        for span, score in zip(side.spans, side.scores, strict=True)
        if span and score >= 0.05 * scale
    ]
    assert expected  # the model credits some of the note's words
    got = [
        (span.text, span.get_attribute("class"))
        for span in shown.find_elements(By.CSS_SELECTOR, "span[class^=up]")
    ]
    assert got == expected
    assert "Either the folder or the old file" in shown.text
    similarity = browser.find_element(By.CSS_SELECTOR, ".hit .similarity").text
    assert similarity == f"similarity {explained.similarity:.3f}"


def test_an_address_runs_its_search_and_back_and_forward_step_through(browser, notes_url):
    browser.get(f"{notes_url}/?q=boil+water")
    _wait_for(browser, ("boil water", "", ["cooking.txt", "moving.md"]))
    browser.get(f"{notes_url}/?q=boil+water&lang=markdown")
    _wait_for(browser, ("boil water", "markdown", ["moving.md"]))
    _search(browser, "old folder")
    _wait_for(browser, ("old folder", "markdown", ["moving.md"]))
    assert browser.current_url == f"{notes_url}/?q=old+folder&lang=markdown"
    browser.back()
    _wait_for(browser, ("boil water", "markdown", ["moving.md"]))
    browser.back()
    _wait_for(browser, ("boil water", "", ["cooking.txt", "moving.md"]))
    browser.forward()
    browser.forward()
    _wait_for(browser, ("old folder", "markdown", ["moving.md"]))
    assert browser.current_url == f"{notes_url}/?q=old+folder&lang=markdown"


def test_the_mode_goes_from_the_address_to_the_search(browser, notes_url):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{notes_url}/?q=dough&mode=lexical")
    _wait_for(browser, ("dough", "", ["cooking.txt"]))  # BM25: only the note with the word
    assert browser.execute_script("return document.getElementById('mode').value") == "lexical"
    browser.get(f"{notes_url}/?q=dough&mode=dense")
    WebDriverWait(browser, 30).until(
        lambda _: len(_shown(browser)[2]) == 2  # dense: every note is a hit
    )
