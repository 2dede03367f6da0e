"""Generate docs/configuration.md, the full configuration reference, from config.toml: its values are the defaults
and its comments the explanations. Run it after editing config.toml (tests/test_docs.py fails while the page is
stale):

    python docs/gen_configuration.py            # writes docs/configuration.md
    python docs/gen_configuration.py --check    # exit 1 if docs/configuration.md differs

How config.toml is read: a ``[section]`` line starts a table of keys; comment lines right after it (and a comment
on the header line) describe the section; ``key = value  # comment`` gives a row (the value through tomllib, so
multi-line lists work), and a comment-only line indented past column 0 continues the previous key's comment;
commented-out TOML at column 0 (``# [alerts.sinks.pager]``, ``# url = "..."``) is shown as an example.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.toml"
OUT = ROOT / "docs" / "configuration.md"

_SECTION = re.compile(r"^\[([\w.\-]+)\]\s*(?:#\s?(.*))?$")
_KEY = re.compile(r"^([A-Za-z_][\w\-]*)\s*=")
_COMMENTED_TOML = re.compile(r'^#\s?(\[|[\w\-]+\s*=|"[^"]*"\s*=)')
_COMMENTED_HEADER = re.compile(r"^#\s?\[\[?([\w.\-]+)\]")


def split_comment(line: str) -> tuple[str, str]:
    """``(code, comment)`` of a TOML line: the first ``#`` outside a string starts the comment.

    >>> split_comment('url = "a#b"   # where  ')
    ('url = "a#b"', 'where')
    """
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote and line[i - 1] != "\\" else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def render_value(value: Any) -> str:
    """A default as TOML writes it.

    >>> render_value(["a", "b"]), render_value(True), render_value(3600.0), render_value("")
    ('["a", "b"]', 'true', '3600.0', '""')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    return repr(value)


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


class _Section:
    """A ``[table]`` of config.toml, or (``name`` empty) a block of commented-out tables, shown as an example."""

    def __init__(self, name: str, about: str = "") -> None:
        self.name, self.about = name, [about] if about else []
        self.rows: list[list[str]] = []  # [key, comment]
        self.example: list[str] = []

    def title(self) -> str:
        """``[name]``, or the tables the example block shows (a named table as ``[parent.NAME]``)."""
        if self.name:
            return f"`[{self.name}]`"
        tables = []
        for line in self.example:
            m = _COMMENTED_HEADER.match("# " + line)
            if m:
                parts = m.group(1).split(".")
                name = ".".join([*parts[:2], "NAME"]) if len(parts) > 2 else m.group(1)
                table = f"`[[{name}]]`" if line.startswith("[[") else f"`[{name}]`"
                if table not in tables:
                    tables.append(table)
        return " and ".join(tables) + " (examples)"


def parse(text: str) -> tuple[list[str], list[_Section]]:
    """The file's opening comment lines and its sections with their rows and commented-out examples."""
    intro: list[str] = []
    sections: list[_Section] = []
    current: _Section | None = None
    last_row: list[str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        header = _SECTION.match(line)
        if header:
            current, last_row = _Section(header.group(1), header.group(2) or ""), None
            sections.append(current)
        elif line.lstrip().startswith("#"):
            comment = line.lstrip()[1:].strip()
            if current is None:
                intro.append(comment)
            elif _COMMENTED_TOML.match(line):
                if _COMMENTED_HEADER.match(line) and current.name:
                    current = _Section("")
                    sections.append(current)
                current.example.append(line[1:].lstrip())
                last_row = None
            elif line[0] != "#" and last_row is not None:
                last_row[1] = f"{last_row[1]} {comment}".strip()
            elif not current.rows:
                current.about.append(comment)
        elif current is not None and _KEY.match(line):
            last_row = [_KEY.match(line).group(1), split_comment(line)[1]]  # type: ignore[union-attr]
            current.rows.append(last_row)
        elif not line:
            last_row = None
    return intro, sections


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def generate(config_text: str) -> str:
    """The Markdown page for ``config_text`` (the contents of config.toml)."""
    data = tomllib.loads(config_text)
    intro, sections = parse(config_text)
    out = ["<!-- Generated from config.toml by docs/gen_configuration.py: edit config.toml, then run "
           "`python docs/gen_configuration.py`. -->", "", "# Configuration reference", "",
           "Every key of `config.toml`: its default (the value the shipped file sets) and what it does (the file's "
           "own comment). `aestream` reads `--config PATH`, else `./config.toml`, else the built-in defaults; "
           "`AESTREAM_KAFKA_BOOTSTRAP_SERVERS` (comma-separated) overrides `kafka.bootstrap_servers`.", "",
           "> " + " ".join(intro), ""]
    for s in sections:
        out += [f"## {s.title()}", ""]
        if s.about:
            out += [" ".join(s.about), ""]
        if s.rows:
            out += ["| key | default | meaning |", "|---|---|---|"]
            for key, comment in s.rows:
                value = render_value(_lookup(data, f"{s.name}.{key}"))
                out.append(f"| `{s.name}.{key}` | `{_cell(value)}` | {_cell(comment)} |")
            out.append("")
        if s.example:
            out += ["Commented out in `config.toml`:", "", "```toml", *s.example, "```", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    page = generate(CONFIG.read_text(encoding="utf-8"))
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != page:
            print(f"{OUT} is stale: run python docs/gen_configuration.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(page, encoding="utf-8")
    print(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
