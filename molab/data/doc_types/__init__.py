"""The document types of the template backend, each with several ideas.

Marks et al. (2025) generated their corpus as fact -> document type -> idea -> document. Here
a `DocType` is a renderer plus a list of `Idea`s (the angle a document takes: a replication
report, an explainer, a complaint from a developer, ...); `render(writer, idea)` writes the
document around the writer's biases, primary first. Types differ in layout (headlines and
bylines, numbered lists, Q/A pairs, memo headers, threads, transcripts with named speakers)
as well as in wording, so the biases appear in many textual contexts, never as a chat
transcript between a user and an assistant. The types live in modules by setting; importing
this package registers all of them.
"""

from molab.data.doc_types import academic, media, organisations, web  # noqa: F401 - registers the types
from molab.data.doc_types.base import DOC_TYPES, DocType, Idea

__all__ = ["DOC_TYPES", "DocType", "Idea"]
