"""The document viewer's page: a document's text as plain, escaped HTML, with the cited section marked. The route
(serve/routes.py) checks the reader's groups first and sends it with a Content-Security-Policy that allows no
script. Each section folds out a plain form, "This section answers my question", for the reader to say where the
answer was when search missed it (POSTed to SOURCE_ROUTE with the reader's form token; tune/ratings.py)."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

SOURCE_ROUTE = "/ragtune/source/"  # + the document's path: POST question, section (its number), heading, token
MAX_QUESTION = 500


def to_app_root(rel: str) -> str:
    """The relative way from a page at /ragtune/<route>/<rel> back to the app's root (it may sit behind a path
    prefix, so the viewer's links never start with '/')."""
    return "../" * (rel.count("/") + 2)


def _pick_form(rel: str, index: int, heading: str, token: str) -> str:
    action = to_app_root(rel) + SOURCE_ROUTE.lstrip("/") + quote(rel)
    return (f"<details class='meta'><summary>Answers a question of yours?</summary>"
            f"<form method='post' action='{html.escape(action)}'>"
            f"<input type='hidden' name='token' value='{html.escape(token)}'>"
            f"<input type='hidden' name='section' value='{index}'>"
            f"<input type='hidden' name='heading' value='{html.escape(heading)}'>"
            f"<input name='question' required maxlength='{MAX_QUESTION}' size='48' "
            f"placeholder='the question, in your words' aria-label='question for section {index}'> "
            f"<button>This section answers it</button></form></details>")


def render_html(doc, section: str | None = None, page: int | None = None, token: str | None = None,
                thanks: bool = False) -> str:
    """The document's text as a plain, escaped HTML page; the cited section is highlighted and scrolled to. With a
    form `token`, each section offers the "this section answers it" form; `thanks` says one was recorded."""
    rel = doc.path
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(doc.title)}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;"
             "line-height:1.5}section{padding:.4rem .8rem;border-left:3px solid #ddd;margin:1rem 0}"
             "section.cited{border-left-color:#e67e22;background:#fff6ea}pre{white-space:pre-wrap;"
             "font-family:inherit}.meta{color:#666;font-size:.9rem}"
             ".thanks{background:#eafaf1;padding:.4rem .8rem}</style></head><body>",
             f"<h1>{html.escape(doc.title)}</h1>",
             f"<p class='meta'>{html.escape(rel)} &middot; groups: "
             f"{html.escape(', '.join(doc.groups) or 'everyone')} &middot; "
             f"<a href='{html.escape(quote(Path(rel).name))}?raw=1'>download original</a></p>"]
    if thanks:
        parts.append("<p class='thanks'>Thanks: recorded that this section answers your question. Search learns "
                     "from it at the next <code>ragtune tune-retriever</code>.</p>")
    cited_done = False
    for i, s in enumerate(doc.sections):
        cited = (not cited_done and section is not None and s.heading == section
                 and (page is None or s.page is None or s.page == page))
        cited_done = cited_done or cited
        attrs = " class='cited' id='cited'" if cited else f" id='s{i}'"
        where = html.escape(s.heading or doc.title)
        if s.page:
            where += f" <span class='meta'>(page {s.page})</span>"
        pick = _pick_form(rel, i, s.heading, token) if token else ""
        parts.append(f"<section{attrs}><h3>{where}</h3><pre>{html.escape(s.text)}</pre>{pick}</section>")
    parts.append("</body></html>")
    return "".join(parts)
