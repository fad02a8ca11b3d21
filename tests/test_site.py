"""The rendered site of `make site`, loaded page by page in a real headless Chromium.

The site is built once into a temporary folder (docs/build_site.py, as `make site` does), served
from 127.0.0.1, and every page is opened in Debian's chromium through Playwright: it loads, shows
each figure the notebook stores, shows no traceback, logs no error, and asks nothing of any other
host. Chromium is Debian's package (`apt-get install chromium`); a missing one is a failure, not a
skip, and Playwright is never allowed to fetch a browser of its own.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import importlib.util
import inspect
import json
import re
import threading
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTES = sorted((ROOT / "data" / "notes").glob("*.txt"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Tags with which myst-nb hides a cell's outputs.
HIDDEN_OUTPUT_TAGS = {"remove-output", "remove-cell"}


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_site", ROOT / "docs" / "build_site.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _load_build_script()
NOTEBOOKS = sorted((ROOT / "notebooks").glob(BUILD.NOTEBOOKS))


def _expected_images(notebook: Path) -> int:
    """Stored image outputs shown on the page, plus the images the markdown cells embed."""
    count = 0
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] == "markdown" and "remove-cell" not in tags:
            source = "".join(cell["source"])
            count += len(re.findall(r"!\[[^\]]*\]\([^)]+\)", source)) + len(re.findall(r"<img\s", source))
        elif cell["cell_type"] == "code" and not tags & HIDDEN_OUTPUT_TAGS:
            count += sum(any(mime.startswith("image/") for mime in output.get("data", {}))
                         for output in cell.get("outputs", []))
    return count


def _has_math(notebook: Path) -> bool:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return any(re.search(r"\$[^$\n]+\$", "".join(c["source"])) for c in cells if c["cell_type"] == "markdown")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    with warnings.catch_warnings():  # the pinned Sphinx extensions use APIs that Sphinx 11 removes
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return BUILD.build(tmp_path_factory.mktemp("site") / "site")


@pytest.fixture(scope="session")
def base_url(site):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # A fresh temporary profile per launch; executable_path keeps Playwright's own browsers out.
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class _Visit:
    """One page in a fresh browser context, with everything that went wrong while it loaded."""

    def __init__(self, browser, base_url: str, path: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.problems: list[str] = []
        self.context.route("**/*", functools.partial(self._only_local, base_url))
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))
        response = self.page.goto(base_url + path, wait_until="load")
        assert response is not None and response.ok, f"{path}: {response and response.status}"

    def _only_local(self, base_url, route):
        if route.request.url.startswith((base_url, "data:", "blob:", "about:")):
            route.continue_()
        else:
            self.problems.append(f"request to another host: {route.request.url}")
            route.abort()

    def links(self) -> list[str]:
        return self.page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")

    def close(self):
        self.context.close()


@pytest.fixture
def visit(browser, base_url):
    opened = []

    def open_page(path: str) -> _Visit:
        opened.append(_Visit(browser, base_url, path))
        return opened[-1]

    yield open_page
    for page in opened:
        page.close()


def test_site_layout(site):
    assert (site / "index.html").is_file()
    assert sorted(p.name for p in (site / "notebooks").glob("*.html")) == [f"{nb.stem}.html" for nb in NOTEBOOKS]
    assert sorted(p.name for p in (site / "data" / "notes").iterdir()) == [note.name for note in NOTES]
    assert (site / "generated" / "detviz.boxes.html").is_file()
    assert not list(site.rglob("*.ipynb")), "the site serves rendered pages, not notebook files"


class _Loads(html.parser.HTMLParser):
    """Every URL an HTML file makes the browser fetch (not the <a> links a reader may follow)."""

    FETCHING = {"script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "source": ("src", "srcset"),
                "video": ("src", "poster"), "audio": ("src",), "embed": ("src",), "object": ("data",),
                "input": ("src",), "track": ("src",)}

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        names = self.FETCHING.get(tag, ())
        if tag == "link" and attrs.get("rel") not in (None, "canonical", "alternate", "search", "index",
                                                     "next", "prev", "author", "license", "help"):
            names = ("href", "imagesrcset")
        self.urls += [attrs[name] for name in names if attrs.get(name)]
        self.css.append(attrs.get("style") or "")
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.css.append(data)


REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
CSS_REMOTE = re.compile(r"(url\(\s*['\"]?|@import\s+['\"])(https?:)?//", re.IGNORECASE)
# In a script: a quoted URL of another host that names a script, style, font or picture, or a CDN.
JS_URL = re.compile(r"""["'`]((?:https?:)?//[^"'`\s]+)""")
FETCHED = re.compile(r"\.(m?js|css|woff2?|ttf|otf|eot|png|jpe?g|gif|svg|webp)(\?|$)"
                     r"|cdn\.|unpkg\.com|jsdelivr|cdnjs|googleapis|gstatic|bootstrapcdn|polyfill\.io", re.IGNORECASE)


def test_no_file_of_the_site_loads_anything_from_another_host(site):
    found = []
    for path in sorted(site.rglob("*")):
        name = path.relative_to(site)
        if path.suffix == ".html":
            parser = _Loads()
            parser.feed(path.read_text(encoding="utf-8"))
            found += [f"{name}: {url}" for url in parser.urls if REMOTE.match(url)]
            found += [f"{name}: {m.group(0)}" for css in parser.css for m in CSS_REMOTE.finditer(css)]
        elif path.suffix == ".css":
            found += [f"{name}: {m.group(0)}" for m in CSS_REMOTE.finditer(path.read_text(encoding="utf-8"))]
        elif path.suffix in (".js", ".mjs"):
            urls = JS_URL.findall(path.read_text(encoding="utf-8"))
            found += [f"{name}: {url}" for url in urls if FETCHED.search(url)]
    assert not found, "\n".join(found)


def test_index_links_every_notebook(visit, base_url):
    index = visit("index.html")
    links = set(index.links())
    missing = [nb.name for nb in NOTEBOOKS if f"{base_url}notebooks/{nb.stem}.html" not in links]
    assert not missing, f"the index does not link {missing}"
    assert f"{base_url}api.html" in links
    assert not index.problems, index.problems


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_page(visit, base_url, notebook):
    shown = visit(f"notebooks/{notebook.stem}.html")
    page = shown.page
    assert notebook.stem.split("_")[0] in page.title()
    images = page.eval_on_selector_all("img", """imgs => imgs.map(i => ({
        src: i.src, ok: i.complete && i.naturalWidth > 0, inArticle: !!i.closest('article')}))""")
    assert [i["src"] for i in images if not i["ok"]] == [], "pictures that did not load"
    assert sum(i["inArticle"] for i in images) == _expected_images(notebook)
    text = page.inner_text("article")
    assert "Traceback" not in text
    if _has_math(notebook):
        sizes = page.eval_on_selector_all("article math", "ms => ms.map(m => m.getBoundingClientRect().height)")
        assert sizes and min(sizes) > 0, "the notebook's LaTeX is not drawn"
    assert page.query_selector_all(".math-source") == [], "LaTeX that could not be turned into MathML"
    # Links to the notes (../data/notes/...) and to other notebooks lead to pages of the site.
    for link in shown.links():
        if link.startswith(base_url) and "/_" not in link:
            response = page.request.get(link.split("#")[0])
            assert response.ok, f"{link}: HTTP {response.status}"
    assert not shown.problems, shown.problems


@pytest.mark.parametrize("note", NOTES, ids=[note.stem for note in NOTES])
def test_note_reads_as_utf8(visit, note):
    shown = visit(f"data/notes/{note.name}")
    assert shown.page.inner_text("body").strip() == note.read_text(encoding="utf-8").strip()


def test_api_reference_shows_docstrings(visit, base_url):
    from detviz.boxes import box_iou

    api = visit("api.html")
    links = set(api.links())
    for module in ("boxes", "anchors", "assigners", "coders", "losses", "gfl", "rcnn", "yolo", "sparse", "viz"):
        assert f"{base_url}generated/detviz.{module}.html" in links, module
    boxes = visit("generated/detviz.boxes.html")
    entry = boxes.page.locator("dl:has(> dt[id='detviz.boxes.box_iou']) > dd").first
    first_line = inspect.getdoc(box_iou).splitlines()[0]
    assert first_line in " ".join(entry.inner_text().split())
    assert not api.problems + boxes.problems, api.problems + boxes.problems
