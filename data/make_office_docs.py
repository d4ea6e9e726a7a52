"""Make the sample corpus's PDF and DOCX documents from their Markdown sources in data/office_src/.

    python data/make_office_docs.py          # writes data/corpus/<folder>/<name>.pdf|.docx (+ .meta.yaml sidecars)

A source named `<name>.pdf.md` or `<name>.docx.md` uses YAML front matter (title, optional groups), '#'/'##'/'###'
headings, paragraphs and '- ' bullets. PDFs get an outline (bookmarks) with the section headings, which is how
ragtune's PDF reader recovers sections; restricted documents get a `<file>.meta.yaml` sidecar with their groups.
Outputs are committed; this script is the record of how they were made. Needs fpdf2 and python-docx.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FIXED_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)  # stable metadata: re-running changes nothing


def parse_source(text: str) -> tuple[dict, list[tuple[str, str]]]:
    """(front matter, blocks) where a block is ('h1'|'h2'|'h3'|'p'|'li', text)."""
    meta = {}
    m = re.match(r"\A---\n(.*?)\n---\n", text, re.S)
    if m:
        meta = yaml.safe_load(m.group(1)) or {}
        text = text[m.end():]
    blocks, para = [], []

    def flush() -> None:
        if para:
            blocks.append(("p", " ".join(para)))
            para.clear()

    for line in text.splitlines():
        s = line.strip()
        h = re.match(r"^(#{1,3})\s+(.*)$", s)
        if h:
            flush()
            blocks.append((f"h{len(h.group(1))}", h.group(2).strip()))
        elif s.startswith("- "):
            flush()
            blocks.append(("li", s[2:].strip()))
        elif not s:
            flush()
        else:
            para.append(s)
    flush()
    return meta, blocks


def write_pdf(meta: dict, blocks: list[tuple[str, str]], out: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(meta.get("title", out.stem))
    pdf.set_author("Brindlewick Instruments Ltd.")
    pdf.add_font("DejaVu", "", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    pdf.add_font("DejaVu", "B", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
    pdf.set_auto_page_break(True, margin=18)
    pdf.add_page()
    sizes = {"h1": 18, "h2": 14, "h3": 12}
    for kind, text in blocks:
        if kind in sizes:
            level = int(kind[1]) - 1
            pdf.ln(3)
            pdf.set_font("DejaVu", "B", sizes[kind])
            pdf.start_section(text, level=level)
            pdf.multi_cell(0, sizes[kind] * 0.55, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        else:
            pdf.set_font("DejaVu", "", 10.5)
            body = ("\u2022 " + text) if kind == "li" else text
            pdf.multi_cell(0, 5.5, body, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
    pdf.output(str(out))


def write_docx(meta: dict, blocks: list[tuple[str, str]], out: Path) -> None:
    import docx

    document = docx.Document()
    props = document.core_properties
    props.title = meta.get("title", out.stem)
    props.author = "Brindlewick Instruments Ltd."
    props.created = props.modified = FIXED_DATE.replace(tzinfo=None)
    for kind, text in blocks:
        if kind.startswith("h"):
            document.add_heading(text, level=int(kind[1]))
        elif kind == "li":
            document.add_paragraph(text, style="List Bullet")
        else:
            document.add_paragraph(text)
    document.save(str(out))


def main(src_root: Path = HERE / "office_src", out_root: Path = HERE / "corpus") -> int:
    for src in sorted(src_root.rglob("*.md")):
        name = src.name[:-3]  # "<name>.pdf" or "<name>.docx"
        if not name.endswith((".pdf", ".docx")):
            print(f"skipping {src}: name must end in .pdf.md or .docx.md", file=sys.stderr)
            continue
        meta, blocks = parse_source(src.read_text("utf-8"))
        out = out_root / src.parent.relative_to(src_root) / name
        out.parent.mkdir(parents=True, exist_ok=True)
        (write_pdf if name.endswith(".pdf") else write_docx)(meta, blocks, out)
        sidecar = out.with_name(out.name + ".meta.yaml")
        if meta.get("groups"):
            sidecar.write_text(yaml.safe_dump({"groups": list(meta["groups"])}, default_flow_style=True))
        elif sidecar.exists():
            sidecar.unlink()
        print(f"wrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
