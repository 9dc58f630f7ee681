"""report.html from report.md: one self-contained page, every figure embedded as a data URI.

MLflow's artifact viewer shows an HTML artifact in a sandboxed iframe loaded from a blob URL,
where a relative `<img src="figures/x.png">` has nothing to resolve against; a data URI
loads. The page is a translation of report.md (report_md.py writes the one text of the
report) covering the Markdown that report_md writes: headings, paragraphs, pipe tables,
`- ` lists, a paragraph that is one image, `**bold**`, `_italic_` and `` `code` ``."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)$")
INLINE = (  # applied to escaped text, in this order: code first, so its insides stay literal
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w/])_(.+?)_(?![\w/])"), r"<em>\1</em>"),
)
MIME = {".png": "image/png", ".svg": "image/svg+xml"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; max-width: 75em; color: #1f2328; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; }
th { background: #f6f8fa; }
figure { margin: 0.8em 0; }
img { max-width: 100%; height: auto; }
figcaption { color: #59636e; font-size: 0.9em; }
code { background: #f6f8fa; padding: 0 0.2em; }
"""


def to_html(markdown: str, folder: str | Path, title: str = "scalelab report") -> str:
    """The page for report.md's text; images are read from `folder` (report.md's own folder)."""
    blocks = [_block(b, Path(folder)) for b in re.split(r"\n\s*\n", markdown.strip()) if b.strip()]
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(blocks) + "\n</body></html>\n")


def _block(text: str, folder: Path) -> str:
    lines = text.strip().split("\n")
    first = lines[0]
    heading = re.match(r"^(#{1,6})\s+(.*)$", first)
    if heading and len(lines) == 1:
        level = len(heading.group(1))
        return f"<h{level}>{_inline(heading.group(2))}</h{level}>"
    if heading:  # a heading line directly followed by more text: keep both
        return _block(first, folder) + "\n" + _block("\n".join(lines[1:]), folder)
    image = IMAGE.match(first)
    if image and len(lines) == 1:
        return _figure(image.group("alt"), image.group("src"), folder)
    if all(line.startswith("|") for line in lines) and len(lines) >= 2:
        return _table(lines)
    if all(line.startswith("- ") for line in lines):
        return "<ul>\n" + "\n".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "\n</ul>"
    return f"<p>{_inline(' '.join(lines))}</p>"


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    for pattern, replacement in INLINE:
        text = pattern.sub(replacement, text)
    return text


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    out = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body]
    return "\n".join(out + ["</table>"])


def _figure(alt: str, src: str, folder: Path) -> str:
    """The image inline as a data URI; a missing file keeps its path as text (never a broken image)."""
    path = folder / src
    caption = f"<figcaption>{_inline(alt)}</figcaption>"
    if not path.is_file() or path.suffix not in MIME:
        return f"<p><em>{html.escape(alt)} (figure file {html.escape(src)} not found)</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure><img alt=\"{html.escape(alt)}\" src=\"data:{MIME[path.suffix]};base64,{data}\">"
            f"{caption}</figure>")
