"""MkDocs hook: links from a page to a file of the repository outside docs/ (`../experiments/base.yaml`), which
read as they are on the forge, work on the site too. The file is copied into the site under `repo/` (a Markdown file
as a page outside the navigation) and the link rewritten to that copy; a link to a file that does not exist stays as
written, so `mkdocs build --strict` reports it as broken."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

LINK = re.compile(r"(\]\()(\.\./[^)\s#]+)([^)]*\))")  # ](../path#anchor "title")
COPIES = "repo"


def _outside(docs: Path, page: str, target: str) -> str | None:
    """The repository path of `target` (a link on `page`, both relative), when it leaves docs/ for a file there."""
    where = posixpath.normpath(posixpath.join(posixpath.dirname(page), target))
    if not where.startswith("../"):
        return None
    path = (docs / where).resolve()
    root = docs.resolve().parent
    if not path.is_file() or not path.is_relative_to(root):
        return None
    return path.relative_to(root).as_posix()


def on_files(files, config):
    """Add every repository file a page links to (outside docs/) as a static file under repo/."""
    docs = Path(config["docs_dir"])
    wanted = set()
    for page in files.documentation_pages():
        for _, target, _ in LINK.findall(Path(page.abs_src_path).read_text(encoding="utf-8")):
            if (found := _outside(docs, page.src_uri, target)) is not None:
                wanted.add(found)
    root = docs.resolve().parent
    for path in sorted(wanted):
        copy = File.generated(config, f"{COPIES}/{path}", abs_src_path=str(root / path))
        copy.inclusion = InclusionLevel.NOT_IN_NAV  # a page of the repository (a reference table), not of the docs
        files.append(copy)
    return files


def on_page_markdown(markdown, page, config, files):
    """Rewrite each link to a repository file outside docs/ to its copy under repo/."""
    docs = Path(config["docs_dir"])

    def rewrite(m: re.Match) -> str:
        found = _outside(docs, page.file.src_uri, m.group(2))
        if found is None:
            return m.group(0)
        copy = posixpath.relpath(f"{COPIES}/{found}", posixpath.dirname(page.file.src_uri) or ".")
        return f"{m.group(1)}{copy}{m.group(3)}"

    return LINK.sub(rewrite, markdown)
