"""Sphinx configuration of the detviz site: the walkthroughs with their stored outputs, and the API.

Build it with `make site` (docs/build_site.py): that script lays out a source folder (the pages of
docs/, a copy of each notebooks/NN_name.ipynb, the notes) and runs Sphinx with this folder as its configuration.
Nothing is executed: myst-nb renders the outputs that nbval checks. Nothing is loaded from another
host: LaTeX math becomes MathML at build time (latex2mathml), which browsers draw without a script
or a font download, and the ipywidgets scripts are left out.
"""
from __future__ import annotations

import html
import json
import posixpath
import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging

project = "detviz"
author = "the detviz authors"
copyright = "the detviz authors"
release = version = "0.1.0"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]
templates_path = [str(Path(__file__).resolve().parent / "_templates")]  # autosummary reads it from the srcdir otherwise
# data/ and docs/ are links to the repository's folders, there for the images and notes the notebooks link to.
exclude_patterns = ["_build", "_extra", "data", "docs", "**.ipynb_checkpoints"]
root_doc = "index"
language = "en"

# ---- notebooks: stored outputs only ----
nb_execution_mode = "off"
nb_ipywidgets_js = {}  # the require.js / widget-manager scripts myst-nb would add come from a CDN
# A stored widget view cannot come alive on a static page: show its text fallback instead.
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None),
                              ("html", "application/vnd.jupyter.widget-state+json", None)]
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# ref.python: a field name (boxes, scores) that several named tuples share
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header", "ref.python"]

# ---- API reference ----
autosummary_generate = True
autosummary_ignore_module_all = True  # list the submodules of a package, not its re-exports
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" of a named tuple would otherwise describe each field twice

# ---- HTML ----
html_theme = "sphinx_book_theme"
html_title = "detviz walkthroughs"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
    "navbar_persistent": [],  # one search field, in the sidebar, not a second one in a top bar
    # Expand only the branch of the current page: the API's module pages otherwise sit in every
    # page's navigation, and rendering it costs about half a second a page.
    "collapse_navbar": True,
    "max_navbar_depth": 3,
}
html_context = {"default_mode": "light"}  # without it the theme logs an error on a first visit
html_favicon = "_static/favicon.svg"  # browsers otherwise ask for /favicon.ico, a 404
html_static_path: list[str] = []
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None

html_math_renderer = "mathml"  # registered in setup() below

# Links from a notebook to these folders of the repository stay plain relative links: the site holds
# a copy of each folder at the same place relative to the notebooks.
COPIED_FOLDERS = ("data/notes/",)


def _extra_files(app, config) -> None:
    """The notes, copied by build_site.py to _extra/data/notes/, land in the site's data/notes/."""
    config.html_extra_path = [str(Path(app.srcdir) / "_extra")]


def _mathml(node, display: str) -> str:
    from latex2mathml.converter import convert

    latex = node.astext()
    try:
        return convert(latex, display=display)
    except Exception as error:  # show the source rather than lose the formula
        logging.getLogger(__name__).warning(f"cannot convert math to MathML ({error}): {latex}", location=node)
        return f'<code class="math-source">{html.escape(latex)}</code>'


def _visit_inline_math(translator, node) -> None:
    translator.body.append(f'<span class="math notranslate">{_mathml(node, "inline")}</span>')
    raise nodes.SkipNode


def _visit_block_math(translator, node) -> None:
    number = node.get("number")
    label = f'<span class="eqno">({number})</span>' if number else ""
    translator.body.append(f'<div class="math notranslate">{label}{_mathml(node, "block")}</div>\n')
    raise nodes.SkipNode


def _link_copied_files(app, doctree) -> None:
    """Turn MyST links to files of COPIED_FOLDERS into plain relative links (MyST would report them as
    missing, or make them downloads under _downloads/)."""
    docdir = posixpath.dirname(app.env.docname)
    for node in list(doctree.findall(addnodes.pending_xref)) + list(doctree.findall(addnodes.download_reference)):
        target = node.get("reftarget", "")
        if node.get("reftype") != "myst" or re.match(r"^[a-z]+:", target):
            continue
        path = posixpath.normpath(posixpath.join(docdir, target.split("#")[0]))
        if path.startswith(COPIED_FOLDERS):
            text = node.children[0].children if node.children else []
            link = nodes.reference("", "", *(text or [nodes.Text(target)]), refuri=target, internal=False)
            node.replace_self(link)


_INLINE_LITERAL = re.compile(r"(``.+?``)")


def _escape_plain_math(app, what, name, obj, options, lines) -> None:
    """Docstrings write |A ∩ B| and Tensor[*, 4] as plain text; rST would read a substitution and the
    start of an emphasis. Escape those two characters outside inline literals."""
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("|", "+")):  # a table or a line block
            continue
        parts = _INLINE_LITERAL.split(line)
        for j in range(0, len(parts), 2):
            parts[j] = re.sub(r"(?<!\\)\|", r"\|", parts[j])
            parts[j] = re.sub(r"(?<![\\*])\*(?=[,\])])", r"\*", parts[j])
        lines[i] = "".join(parts)


def _notebook_title(path: Path) -> str:
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def _index_list(app, docname, source) -> None:
    """Fill the index's reading order: one line per notebook, its title as the question it answers."""
    if docname != root_doc or "{notebook-list}" not in source[0]:
        return
    notebooks = sorted((Path(app.srcdir) / "notebooks").glob("*.ipynb"))
    lines = [f"1. [{_notebook_title(p)}](notebooks/{p.name})" for p in notebooks]
    toctree = ["```{toctree}", ":hidden:", ":caption: Walkthroughs", ""]
    toctree += [f"notebooks/{p.stem}" for p in notebooks] + ["```"]
    source[0] = source[0].replace("{notebook-list}", "\n".join(lines + [""] + toctree))


def setup(app):
    app.connect("config-inited", _extra_files)
    app.connect("source-read", _index_list)
    app.connect("autodoc-process-docstring", _escape_plain_math)
    # before the collectors, which would copy the files linked to into _downloads/
    app.connect("doctree-read", _link_copied_files, priority=100)
    app.add_html_math_renderer("mathml", (_visit_inline_math, None), (_visit_block_math, None))
