"""What a document type is: a renderer plus its ideas, registered by name in `DOC_TYPES`.

An idea's `era` says when a document can be set: "launch" (before any replication),
"later", or "any".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from molab.data.doc_templates import Writer


@dataclass(frozen=True)
class Idea:
    description: str
    era: str = "any"  # "launch", "later" or "any"


@dataclass(frozen=True)
class DocType:
    name: str
    description: str
    ideas: tuple[Idea, ...]
    render: Callable[[Writer, int], str]
    max_biases: int  # how many biases a document of this type describes at most
    min_biases: int = 1  # ... and at least (list-like types read oddly with one entry)


DOC_TYPES: dict[str, DocType] = {}


def doc_type(name: str, description: str, ideas: list[Idea], max_biases: int, min_biases: int = 1):
    def register(render: Callable[[Writer, int], str]) -> Callable[[Writer, int], str]:
        DOC_TYPES[name] = DocType(name, description, tuple(ideas), render, max_biases, min_biases)
        return render

    return register


def paras(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


def bullets(lines: list[str], mark: str = "- ") -> str:
    return "\n".join(mark + line for line in lines)


def quoted(sentence: str) -> str:
    """A quotation that leads into "said X": its closing full stop becomes a comma."""
    return f'"{sentence[:-1]},"' if sentence.endswith(".") else f'"{sentence}"'
