"""The Sphinx documentation builds with zero warnings and renders what it must.

One ``sphinx-build -W --keep-going -b html`` run (about 15 s: autodoc imports torch) into a
temporary folder, shared by the tests below, which then read the HTML:

* the tutorial page (an ``{include}`` of ``tutorials/.../index.md``) links every
  ``{term}`` reference it makes to its glossary entry, and shows the tutorial's code;
* the glossary defines both spellings, ``embedding model`` and ``embedding_model``;
* the README page's relative links (``CHANGELOG.md``, the tutorial) lead to built pages;
* the API page documents the modules it lists.

Skipped, with the reason, when ``sphinx`` or ``myst_parser`` is not installed
(``pip install ".[docs]"``).
"""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TUTORIAL_SOURCE = ROOT / "tutorials" / "self-supervised-totally-looks-like" / "index.md"
TUTORIAL_PAGE = Path("tutorials") / "self-supervised-totally-looks-like" / "index.html"

#: ``{term}`text``` or ``{term}`text <target>``` in MyST
TERM_ROLE = re.compile(r"\{term\}`([^`<]+?)\s*(?:<([^>`]+)>)?`")
#: a resolved term reference in Sphinx's HTML
TERM_LINK = re.compile(
    r'<a class="reference internal" href="([^"#]*)#([^"]+)">'
    r'<span class="xref std std-term">([^<]+)</span></a>'
)


def _require(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (pip install '.[docs]'); docs not built")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the docs once with -W into a temporary folder; the folder of the HTML."""
    _require("sphinx")
    _require("myst_parser")
    out = tmp_path_factory.mktemp("docs")
    env = dict(os.environ)
    # Document this checkout even when an older copy of the package is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
        "-d", str(out / "doctrees"), str(DOCS), str(out / "html"),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    assert "WARNING" not in result.stderr, result.stderr
    return out / "html"


def _read(site: Path, page: Path | str) -> str:
    return (site / page).read_text(encoding="utf-8")


def _ids(page_html: str) -> set:
    return set(re.findall(r'\bid="([^"]+)"', page_html))


def _term_links(page_html: str) -> List[Tuple[str, str, str]]:
    """``(href page, anchor, link text)`` of every resolved term reference."""
    return [(page, anchor, html.unescape(text)) for page, anchor, text in TERM_LINK.findall(page_html)]


def _glossary_entries(site: Path) -> Dict[str, str]:
    """Term text -> element id of its ``<dt>`` on the glossary page."""
    glossary = _read(site, "glossary.html")
    entries = re.findall(r'<dt id="([^"]+)">(.*?)<a class="headerlink"', glossary, flags=re.S)
    return {html.unescape(re.sub(r"<[^>]+>", "", text)).strip(): anchor for anchor, text in entries}


def test_glossary_defines_both_spellings_of_embedding_model(site):
    entries = _glossary_entries(site)
    assert {"embedding model", "embedding_model"} <= set(entries), entries


def test_tutorial_term_references_link_to_the_glossary(site):
    used = {(target or text).strip() for text, target in TERM_ROLE.findall(TUTORIAL_SOURCE.read_text("utf-8"))}
    assert "embedding model" in used, "the tutorial no longer references the term 'embedding model'"
    page = _read(site, TUTORIAL_PAGE)
    links = _term_links(page)
    glossary_ids = _ids(_read(site, "glossary.html"))
    entries = _glossary_entries(site)
    linked = {text for href, anchor, text in links if href == "../../glossary.html" and anchor in glossary_ids}
    for term in used:
        assert term in linked, f"{{term}}`{term}` is not a link to the glossary: {links}"
        assert any(anchor == entries[term] for _, anchor, text in links if text == term)


def test_both_spellings_resolve_to_glossary_anchors(site):
    entries = _glossary_entries(site)
    links = _term_links(_read(site, "glossary.html")) + [
        (href.replace("../../", ""), anchor, text) for href, anchor, text in _term_links(_read(site, TUTORIAL_PAGE))
    ]
    for term in ("embedding model", "embedding_model"):
        targets = {anchor for href, anchor, text in links if text == term and href in ("", "glossary.html")}
        assert targets == {entries[term]}, (term, links)


def test_tutorial_page_shows_the_tutorials_code(site):
    page = _read(site, TUTORIAL_PAGE)
    assert "adaptiveavgpool2d_173" in page
    assert "NTXentLoss" in page and "TripletEasyHardMiner" in page
    assert 'class="highlight-python' in page  # code blocks rendered and highlighted
    assert "Self-supervised pre-training on Totally Looks Like" in page


def test_readme_links_lead_to_built_pages(site):
    page = _read(site, "readme.html")
    hrefs = set(re.findall(r'<a class="reference internal" href="([^"#]+)', page))
    assert {"CHANGELOG.html", TUTORIAL_PAGE.as_posix()} <= hrefs, hrefs
    for href in hrefs:
        assert (site / href).is_file(), href


@pytest.mark.parametrize(
    "anchor",
    [
        "finetuner_selfsup.fit.fit",
        "module-finetuner_selfsup.heads",
        "module-finetuner_selfsup.losses",
        "module-finetuner_selfsup.miners",
        "module-finetuner_selfsup.augment.preprocessor",
        "module-finetuner_selfsup.tailoring",
        "module-finetuner_selfsup.evaluation",
        "module-finetuner_selfsup.experiments.data",
        "module-finetuner_selfsup.pictures",
        "finetuner_selfsup.heads.ProjectionHead",
        "finetuner_selfsup.losses.NTXentLoss",
        "finetuner_selfsup.miners.TripletEasyHardMiner",
        "finetuner_selfsup.augment.preprocessor.vision_preprocessor",
        "finetuner_selfsup.pictures.save_retrieval_examples",
        "finetuner_selfsup.augment.batched.BatchedSimCLRAugmentation",
        "finetuner_selfsup.optim.LargeBatchRecipe",
        "finetuner_selfsup.optim.LARS",
        "finetuner_selfsup.distributed.ShardedBatchSampler",
        "finetuner_selfsup.experiments.data.font_pairs.make_font_pairs",
        "finetuner_selfsup.experiments.reproduce.recipes.Recipe",
    ],
)
def test_api_page_documents(site, anchor):
    assert anchor in _ids(_read(site, "api.html"))
