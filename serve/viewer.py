"""The document viewer's page: a document's text as plain, escaped HTML, with the cited section marked. The route
(serve/routes.py) checks the reader's groups first and sends it with a Content-Security-Policy that allows no
script."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote


def render_html(doc, section: str | None = None, page: int | None = None) -> str:
    """The document's text as a plain, escaped HTML page; the cited section is highlighted and scrolled to."""
    rel = doc.path
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(doc.title)}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;"
             "line-height:1.5}section{padding:.4rem .8rem;border-left:3px solid #ddd;margin:1rem 0}"
             "section.cited{border-left-color:#e67e22;background:#fff6ea}pre{white-space:pre-wrap;"
             "font-family:inherit}.meta{color:#666;font-size:.9rem}</style></head><body>",
             f"<h1>{html.escape(doc.title)}</h1>",
             f"<p class='meta'>{html.escape(rel)} &middot; groups: "
             f"{html.escape(', '.join(doc.groups) or 'everyone')} &middot; "
             f"<a href='{html.escape(quote(Path(rel).name))}?raw=1'>download original</a></p>"]
    cited_done = False
    for i, s in enumerate(doc.sections):
        cited = (not cited_done and section is not None and s.heading == section
                 and (page is None or s.page is None or s.page == page))
        cited_done = cited_done or cited
        attrs = " class='cited' id='cited'" if cited else f" id='s{i}'"
        where = html.escape(s.heading or doc.title)
        if s.page:
            where += f" <span class='meta'>(page {s.page})</span>"
        parts.append(f"<section{attrs}><h3>{where}</h3><pre>{html.escape(s.text)}</pre></section>")
    parts.append("</body></html>")
    return "".join(parts)
