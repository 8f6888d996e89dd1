"""The offline graph viewer: one self-contained page, written to a file or served on 127.0.0.1.

Why molab's own: circuit-tracer's viewer fetches its libraries and, for hub transcoders, its
feature files from a CDN, and its local server writes the graph file in place (not atomically).
This page embeds the graph JSON (`molab.circuits.export`, the frontend schema) and the feature
records its nodes need (`molab.circuits.feature_files`), and its script and style come from
`molab/circuits/viewer/` (no library, no CDN): it opens from disk with no network at all.

What it shows: the pruned graph by layer (rows, embeddings at the bottom, logits on top) and
token position (columns); links coloured by sign (blue positive, red negative) and sized by
|weight|; a node's details on hover (clerp, activation, influence, its feature's top examples
with the token highlighted, top and bottom logits, activation histogram, strongest links);
click pins a node (`pinnedIds`), shift+click selects nodes that "Group selected" makes a
supernode (`[label, node_id, ...]`); a slider hides nodes whose cumulative influence is above
its value.

A pruned graph of a real model holds about a million links (circuit-tracer's default thresholds
keep 98% of the edge influence), too many for a page: the page carries the strongest
`max_links` links and each node's strongest `links_per_node` incoming and outgoing links
(`page_links`), so a node's details still list its strongest links, and says how many of the
file's links it draws. The graph file itself always keeps every link.

The state is saved in the graph file's `qParams`: served (`serve`), the page POSTs it to
`/save` and the server rewrites the file's qParams atomically; as a static file, it offers the
updated JSON as a download (when the page carries only some links, under another name: it holds
only those).
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from molab.circuits.export import file_model, read_graph_json, write_qparams
from molab.circuits.feature_files import RECORD, graph_features, read_features
from molab.errors import MolabError
from molab.files import check_output_file, write_text

log = logging.getLogger(__name__)

ASSETS = Path(__file__).with_name("viewer")
HOST = "127.0.0.1"
SAVE_PATH = "/save"
MAX_BODY = 16 * 1024 * 1024
GENERATOR = '<meta name="generator" content="molab circuits view">'
MAX_LINKS = 5000
LINKS_PER_NODE = 10


def _embed(obj: Any) -> str:
    """JSON safe inside a <script> element (no `</script>`, no HTML comment openers)."""
    text = json.dumps(obj, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def load_features(folder: str | Path | None, data: dict[str, Any], where: str) -> dict[str, dict]:
    """The records of the graph's feature nodes found in `folder` ("{layer}_{index}" -> record);
    a folder made for another model than the graph's is refused."""
    if folder is None:
        return {}
    folder = Path(folder)
    record_file = folder / RECORD
    if record_file.is_file():
        made_for = json.loads(record_file.read_text(encoding="utf-8")).get("model_name")
        graph_model = file_model(data)
        if made_for and graph_model and made_for != graph_model:
            raise MolabError(
                f"{folder} holds features of {made_for!r}, but {where} is a graph of {graph_model!r}"
            )
    return read_features(folder, graph_features(data))


def page_links(links: list[dict], max_links: int, links_per_node: int) -> list[dict]:
    """The links a page carries, in the file's order: the `max_links` strongest by |weight|, and
    every node's `links_per_node` strongest incoming and outgoing links (ties: the earlier)."""
    if len(links) <= max_links:
        return links
    strength = [abs(link["weight"]) for link in links]
    order = sorted(range(len(links)), key=strength.__getitem__, reverse=True)  # stable: ties keep order
    seen_out, seen_in = Counter(), Counter()
    keep = []
    for rank, i in enumerate(order):
        source, target = links[i]["source"], links[i]["target"]
        if rank < max_links or seen_out[source] < links_per_node or seen_in[target] < links_per_node:
            keep.append(i)
        seen_out[source] += 1
        seen_in[target] += 1
    return [links[i] for i in sorted(keep)]


def _check_limits(max_links: int, links_per_node: int) -> None:
    if max_links < 0 or links_per_node < 0:
        raise MolabError(
            f"max_links ({max_links}) and links_per_node ({links_per_node}) should be at least 0"
        )


def page_graph(data: dict[str, Any], max_links: int, links_per_node: int) -> dict[str, Any]:
    """Graph JSON `data` as a page carries it: the same, with its links cut to `page_links`."""
    return {**data, "links": page_links(data["links"], max_links, links_per_node)}


def page_html(
    data: dict[str, Any],
    features: dict[str, dict],
    *,
    file_name: str,
    save_url: str | None,
    file_links: int | None = None,
) -> str:
    """The viewer page for graph JSON `data` (the links it carries, `page_graph`) and its
    feature records; `file_links`: how many links the graph file holds (default: all here)."""
    template = (ASSETS / "page.html").read_text(encoding="utf-8")
    total = len(data["links"]) if file_links is None else file_links
    config = {"saveUrl": save_url, "fileName": file_name, "fileLinks": total}
    parts = {
        "__TITLE__": html.escape(f"{data['metadata']['slug']}: attribution graph"),
        "__CSS__": (ASSETS / "viewer.css").read_text(encoding="utf-8"),
        "__GRAPH__": _embed(data),
        "__FEATURES__": _embed(features),
        "__CONFIG__": _embed(config),
        "__JS__": (ASSETS / "viewer.js").read_text(encoding="utf-8"),
    }
    # one scan of the template: text put in (a prompt, a token) is never searched for keys
    return re.sub("|".join(parts), lambda m: parts[m.group(0)], template)


def write_page(
    graph: str | Path,
    out: str | Path,
    features: str | Path | None = None,
    *,
    max_links: int = MAX_LINKS,
    links_per_node: int = LINKS_PER_NODE,
) -> Path:
    """A static page for the graph JSON `graph` (with the feature folder's records), written
    atomically to `out`; it carries the links of `page_links`."""
    graph, out = Path(graph), Path(out)
    _check_limits(max_links, links_per_node)
    check_output_file(out)
    if out.is_file() and GENERATOR not in out.read_text(encoding="utf-8", errors="replace"):
        raise MolabError(f"{out} exists and is not a page of molab's viewer: molab will not replace it")
    data = read_graph_json(graph)
    records = load_features(features, data, str(graph))
    carried = page_graph(data, max_links, links_per_node)
    page = page_html(carried, records, file_name=graph.name, save_url=None, file_links=len(data["links"]))
    write_text(out, page)
    return out


@dataclass
class ViewerServer:
    """A running viewer server; `stop()` ends it."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}/"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Carried:
    """The graph as the served page carries it (`page_graph`), read again only when the file
    changes: reading and cutting a million links takes seconds, a page load should not."""

    def __init__(self, graph: Path, data: dict[str, Any], max_links: int, links_per_node: int):
        self.graph, self.max_links, self.links_per_node = graph, max_links, links_per_node
        self._keep(data)

    def _stamp(self) -> tuple[int, int]:
        st = self.graph.stat()
        return st.st_mtime_ns, st.st_size

    def _keep(self, data: dict[str, Any]) -> None:
        self.stamp = self._stamp()
        self.data = page_graph(data, self.max_links, self.links_per_node)
        self.file_links = len(data["links"])

    def get(self) -> tuple[dict[str, Any], int]:
        """The page's graph and how many links the file holds."""
        if self._stamp() != self.stamp:
            self._keep(read_graph_json(self.graph))
        return self.data, self.file_links

    def saved(self, qparams: dict[str, Any]) -> None:
        """The file now holds `qparams` (and the same graph)."""
        self.data = {**self.data, "qParams": qparams}
        self.stamp = self._stamp()


def _handler(graph: Path, features: dict[str, dict], carried: _Carried):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            log.debug("viewer: " + format, *args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self):
            if self.path.split("?")[0] not in ("/", "/index.html"):
                return self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            try:
                with lock:
                    data, file_links = carried.get()
            except (MolabError, OSError) as e:
                return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, str(e).encode(), "text/plain")
            page = page_html(data, features, file_name=graph.name, save_url=SAVE_PATH, file_links=file_links)
            self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")

        def do_POST(self):
            if self.path != SAVE_PATH:
                return self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            port = self.server.server_address[1]
            own = {f"{HOST}:{port}", f"localhost:{port}"}
            host, origin = self.headers.get("Host", ""), self.headers.get("Origin")
            if host not in own or (origin is not None and origin != f"http://{host}"):
                # only the page this server made may save (not another site, nor a rebound name)
                return self._json(HTTPStatus.FORBIDDEN, {"error": f"{origin or host} may not save"})
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                return self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send application/json"})
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": "missing or too large body"})
            try:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict) or "qParams" not in body:
                    raise MolabError('the body should be {"qParams": {...}}')
                with lock:
                    saved = write_qparams(graph, body["qParams"])
                    carried.saved(saved)
            except (MolabError, json.JSONDecodeError) as e:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            log.info("viewer: saved the viewer state into %s", graph)
            self._json(HTTPStatus.OK, {"saved": str(graph), "qParams": saved})

    return Handler


def serve(
    graph: str | Path,
    features: str | Path | None = None,
    port: int = 0,
    *,
    max_links: int = MAX_LINKS,
    links_per_node: int = LINKS_PER_NODE,
) -> ViewerServer:
    """Serve the viewer of the graph JSON `graph` on 127.0.0.1:`port` (0: any free port) in a
    background thread; its page carries the links of `page_links`, and its POST /save writes
    the viewer state into the graph file (every link kept)."""
    graph = Path(graph).resolve()
    _check_limits(max_links, links_per_node)
    data = read_graph_json(graph)
    records = load_features(features, data, str(graph))
    carried = _Carried(graph, data, max_links, links_per_node)
    try:
        httpd = ThreadingHTTPServer((HOST, port), _handler(graph, records, carried))
    except OSError as e:
        raise MolabError(f"cannot serve on {HOST}:{port}: {e.strerror or e}") from None
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="molab-viewer", daemon=True)
    thread.start()
    return ViewerServer(httpd, thread)
