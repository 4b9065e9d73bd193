"""Reading the report's HTML back: its elements, attributes and text, with the standard
library's parser (what a browser builds is checked in the browser test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parents: tuple[str, ...]
    """The ``id`` of each enclosing element that has one, outermost first."""


@dataclass
class Parsed:
    elements: list[Element] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)

    def all(self, tag: str, **attrs: str) -> list[Element]:
        return [
            e
            for e in self.elements
            if e.tag == tag and all(e.attrs.get(k) == v for k, v in attrs.items())
        ]

    def within(self, section_id: str, tag: str) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and section_id in e.parents]


VOID = frozenset({"meta", "br", "img", "input", "link", "hr", "wbr", "source"})


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parsed = Parsed()
        self.stack: list[tuple[str, str | None]] = []
        self.in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        parents = tuple(i for _, i in self.stack if i)
        self.parsed.elements.append(Element(tag, values, parents))
        if tag not in VOID:
            self.stack.append((tag, values.get("id")))
        self.in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        parents = tuple(i for _, i in self.stack if i)
        self.parsed.elements.append(Element(tag, values, parents))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            open_tag, _ = self.stack.pop()
            if open_tag == tag:
                break
        self.in_style = False

    def handle_data(self, data: str) -> None:
        (self.parsed.styles if self.in_style else self.parsed.text).append(data)


def parse(page: str) -> Parsed:
    parser = _Parser()
    parser.feed(page)
    parser.close()
    return parser.parsed


URL_ATTRIBUTES = frozenset({"src", "href", "xlink:href", "action", "srcset", "poster", "data"})


def external_references(page: str) -> list[str]:
    """Everything in the page that would make a browser fetch something: URL attributes,
    ``url(...)`` and ``@import`` in styles, and the elements that load by nature."""
    parsed = parse(page)
    found: list[str] = []
    for element in parsed.elements:
        if element.tag in ("script", "link", "iframe", "img", "object", "embed", "base"):
            found.append(f"<{element.tag}>")
        for name, value in element.attrs.items():
            if name in URL_ATTRIBUTES or "://" in value or "url(" in value:
                found.append(f"{element.tag}[{name}]={value}")
    for style in parsed.styles:
        if "url(" in style or "@import" in style or "://" in style:
            found.append(f"<style>{style[:80]}")
    return found
