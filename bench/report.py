"""Sections of a results file that several bench scripts write: each script replaces its own
section (headed `## ...`) and leaves the others as they are."""

from __future__ import annotations

from pathlib import Path


def _split(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(what comes before the first section, [(heading line, whole section text)])."""
    head, sections = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            sections.append([line.rstrip("\n"), line])
        elif sections:
            sections[-1][1] += line
        else:
            head.append(line)
    return "".join(head), [(h, s) for h, s in sections]


def put(path: Path, heading: str, body: str, preamble: str | None = None) -> None:
    """Replace the section whose heading starts with `heading` (or add it at the end); with `preamble`,
    replace what comes before the first section too."""
    head, sections = _split(path.read_text() if path.exists() else "")
    text = f"{heading}\n\n{body.strip()}\n\n"
    name = heading.split(" (`")[0]  # a heading may name its script and flags after the title
    for i, (h, _) in enumerate(sections):
        if h.split(" (`")[0] == name:
            sections[i] = (heading, text)
            break
    else:
        sections.append((heading, text))
    path.write_text((preamble.rstrip() + "\n\n" if preamble is not None else head) + "".join(s for _, s in sections))
