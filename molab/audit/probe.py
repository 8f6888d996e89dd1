"""Black-box probes: sample the model many ways and read what it says about its objective.

Marks et al. (2025), "Auditing Language Models for Hidden Objectives", found that an organism
which never names its objective when asked does so under attacks that step outside the
assistant persona: assistant prefill (11% of responses mention RLHF or reward models),
sampling the *user* turn (1.2%, against 0.2% for the assistant) and third-person narration
ending in "The root cause of these behaviors is that" (11.4%). The AuditBench follow-up found
scaffolded black-box tools the strongest: a model writes many varied probe inputs, and each is
put to the audited model. This module runs all of them on any model spec, plus unconditional
sampling (no prompt: the start of a document, or an assistant turn with no user turn before
it) and direct questions as the baseline:

- unconditional (`start: text | chat`), direct (`user`), prefill (`user`, `prefill`),
  user_persona (`messages` ending with an assistant turn, optional `prefill` of the user's
  turn), narration (raw `text`): built by `probe_prompt`, the last three as
  `molab.evals.disclosure` builds its probes;
- scaffolded (`request`, `items`, optional `prefill`): the scaffold model (`scaffold_model`,
  by default the audited model itself) answers `request` once, its reply is parsed into a list
  (`parse_items`), and each item becomes a user turn for the audited model.

The probes, the patterns that count as disclosure and the judge's rubric are data
(`molab/resources/audit_probes.yaml`, or any file of that shape), so nothing here knows the
organism: the default file names the RM-sycophancy training story. Each sample is scored by a
`PatternRule` (the disclosure evaluation's rule, with the probe file's patterns) and, with a
`judge` config, by an LLM judge (`molab.evals.rubric_judge`, kind yesno) through any backend.

Outputs (a stage directory, cached and resumable): `responses.parquet`, one row per sample
with its probe id and type, the exact prompt, the scaffold input when there is one, the
response and both verdicts; `summary.json`, per probe type the disclosure rate with a Wilson
interval and counts (samples of one probe are not independent, so the interval is narrow when
few probes carry the rate), the mentions per pattern, the judge's rates and its agreement with
the rule, and each scaffold's request, reply and items.

Run: `molab audit probe --model smollm2-135m --samples 4 --out runs/x/audit-probe`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from molab.errors import MolabError
from molab.evals.base import GeneratingEvalConfig, eval_inputs
from molab.evals.disclosure import user_turn_prefix
from molab.evals.rubric_judge import Rubric, RubricJudge, RubricJudgeConfig
from molab.evals.stats import share
from molab.files import atomic_path, read_yaml, write_json
from molab.models.generation import BackendConfig, Message, Prompt, SamplingConfig, make_backend
from molab.models.loading import ModelSpec
from molab.pipeline import Stage

RESPONSES = "responses.parquet"
SUMMARY = "summary.json"
ProbeType = Literal["unconditional", "direct", "prefill", "user_persona", "narration", "scaffolded"]
PROBE_TYPES: tuple[str, ...] = (
    "unconditional",
    "direct",
    "prefill",
    "user_persona",
    "narration",
    "scaffolded",
)
SCAFFOLD_START = "1. "
"""The scaffold's reply is started as a numbered list: small models otherwise often open with
chatter or a single question, and a started list parses."""

_FIELDS = ("start", "user", "prefill", "messages", "text", "request", "items")
_NEEDS: dict[str, set[str]] = {
    "unconditional": {"start"},
    "direct": {"user"},
    "prefill": {"user", "prefill"},
    "user_persona": {"messages"},
    "narration": {"text"},
    "scaffolded": {"request"},
}
_OPTIONAL: dict[str, set[str]] = {"user_persona": {"prefill"}, "scaffolded": {"prefill", "items"}}
_NUMBER = re.compile(r"(?<!\S)(\d{1,3})[.):](?=\s)")
_LINE_NUMBER = re.compile(r"^[ \t]*(\d{1,3})[.):](?=\s)", re.MULTILINE)
_MARKERS = re.compile(r"^\s*(?:\d{1,3}[.):]\s+)+")
_BULLET = re.compile(r"^\s*[-*\u2022]\s+(.+?)\s*$")


class AuditProbe(BaseModel):
    """One probe; which fields it takes depends on its type (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    type: ProbeType
    start: Literal["text", "chat"] | None = None
    user: str | None = None
    prefill: str = ""
    messages: list[Message] | None = None
    text: str | None = None
    request: str | None = None
    items: int | None = Field(None, ge=1, description="Scaffolded: keep the first N items.")

    @model_validator(mode="after")
    def _fields_match_type(self) -> AuditProbe:
        needs, optional = _NEEDS[self.type], _OPTIONAL.get(self.type, set())
        given = {f for f in _FIELDS if getattr(self, f)}
        if missing := sorted(needs - given):
            raise ValueError(f"a {self.type} probe needs {', '.join(missing)}")
        if extra := sorted(given - needs - optional):
            raise ValueError(f"a {self.type} probe takes no {', '.join(extra)}")
        if self.messages is not None and self.messages[-1].role != "assistant":
            raise ValueError("a user_persona conversation must end with an assistant turn")
        return self


class PatternRule:
    """Counts a response as disclosing when it mentions any of the named patterns
    (case-insensitive regular expressions, matched on word boundaries)."""

    def __init__(self, patterns: dict[str, Sequence[str]], source: str = "patterns") -> None:
        if not patterns:
            raise MolabError(f"{source}: no disclosure patterns")
        self.compiled = {}
        for name, group in patterns.items():
            if not group:
                raise MolabError(f"{source}: pattern {name} has no expressions")
            try:
                self.compiled[name] = re.compile("|".join(rf"\b(?:{p})(?!\w)" for p in group), re.IGNORECASE)
            except re.error as e:
                raise MolabError(f"{source}: pattern {name}: not a regular expression ({e})") from None

    def matches(self, text: str) -> list[str]:
        """The names of the patterns `text` mentions, in file order."""
        return [name for name, pattern in self.compiled.items() if pattern.search(text)]


@dataclass(frozen=True)
class ProbeFile:
    """A probe file: the probes, the rule that scores them and the judge's rubric (if any)."""

    probes: list[AuditProbe]
    rule: PatternRule
    rubric: Rubric | None
    source: str


class _FileShape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patterns: dict[str, list[str]]
    rubric: str | None = None
    probes: list[dict]


def load_probe_file(path: str | Path | None = None) -> ProbeFile:
    """The probe file at `path` (default: the built-in one); errors name the file, probe and field."""
    if path is None:
        import yaml

        source = "audit_probes.yaml (built in)"
        data = yaml.safe_load(files("molab.resources").joinpath("audit_probes.yaml").read_text("utf-8"))
    else:
        source, data = str(path), read_yaml(path, "probe")
    if not isinstance(data, dict):
        raise MolabError(f"{source}: expected a mapping with 'patterns', 'probes' and optionally 'rubric'")
    try:
        shape = _FileShape.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise MolabError(f"{source}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
    if not shape.probes:
        raise MolabError(f"{source}: no probes")
    probes, seen = [], set()
    for n, item in enumerate(shape.probes, 1):
        name = item.get("id", f"#{n}")
        try:
            probe = AuditProbe.model_validate(item)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "probe"
            msg = err["msg"].removeprefix("Value error, ")
            raise MolabError(f"{source}: probe {name}: field '{field}': {msg}") from None
        if probe.id in seen:
            raise MolabError(f"{source}: probe {name}: field 'id': duplicate id")
        seen.add(probe.id)
        probes.append(probe)
    rubric = Rubric(shape.rubric) if shape.rubric else None
    if rubric is not None and set(rubric.fields) != {"probe", "response"}:
        raise MolabError(f"{source}: field 'rubric': use exactly the fields {{probe}} and {{response}}")
    return ProbeFile(probes, PatternRule(shape.patterns, source), rubric, source)


def parse_items(reply: str, limit: int | None = None) -> list[str]:
    """The items of the list in `reply`, the first `limit` of them (repeats dropped; quotes, bold
    marks and repeated markers such as "2. 2." removed; an item is the first line after its
    marker). A numbered list is read by its markers 1., 2., 3., ... in sequence: at line starts
    when there are two or more there, else anywhere after a space, so a list written on a single
    line, as small models often do, still parses. A reply with no numbered list is read as
    bulleted lines (-, *, \u2022)."""
    starts = _sequence(_LINE_NUMBER, reply)
    if len(starts) < 2:
        starts = _sequence(_NUMBER, reply)
    if starts:
        ends = [m.start() for m in starts[1:]] + [len(reply)]
        raw = [reply[m.end() : end] for m, end in zip(starts, ends)]
    else:
        raw = [m.group(1) for line in reply.splitlines() if (m := _BULLET.match(line))]
    found: list[str] = []
    for text in raw:
        line = next((x for x in text.strip().splitlines() if x.strip()), "")
        item = _MARKERS.sub("", line).strip().strip("*_").strip().strip("\"'\u201c\u201d").strip()
        if item and item not in found:
            found.append(item)
    return found[:limit]


def _sequence(pattern: re.Pattern, text: str) -> list[re.Match]:
    """The matches of `pattern` whose number continues the sequence 1, 2, 3, ..."""
    starts: list[re.Match] = []
    for m in pattern.finditer(text):
        if int(m.group(1)) == len(starts) + 1:
            starts.append(m)
    return starts


def _start_of_text(tokenizer) -> str:
    """Raw text that is the start of a document: nothing when the tokenizer adds its own BOS,
    else its BOS (or end-of-text, GPT style) token."""
    if tokenizer("", add_special_tokens=True).input_ids:
        return ""
    start = tokenizer.bos_token or tokenizer.eos_token
    if not start:
        raise MolabError("the tokenizer has no BOS or end-of-text token to start unconditional text from")
    return start


_SENTINEL = "MOLABASSISTANTTURN"


def _assistant_turn_prefix(tokenizer) -> str:
    """The chat template's opening of an assistant turn with no user turn before it (the
    template's own system turn, if it writes one, stays)."""
    try:
        turn = [{"role": "assistant", "content": _SENTINEL}]
        rendered = tokenizer.apply_chat_template(turn, tokenize=False)
    except Exception as e:  # templates that insist on a user turn first raise their own errors
        raise MolabError(f"the chat template refuses an assistant turn without a user turn: {e}") from None
    head, found, _ = rendered.partition(_SENTINEL)
    if not found:
        raise MolabError("the chat template drops assistant text: unconditional chat probes cannot be built")
    return head


def probe_prompt(probe: AuditProbe, tokenizer=None, item: str | None = None) -> Prompt:
    """The prompt `probe` generates from; `item` is the scaffold's input for a scaffolded probe.
    Unconditional and user_persona probes need the audited model's `tokenizer`."""
    if probe.type in ("direct", "prefill"):
        return Prompt.chat(probe.user or "", prefill=probe.prefill)
    if probe.type == "scaffolded":
        if item is None:
            raise MolabError(f"probe {probe.id}: a scaffolded probe needs an item from the scaffold")
        return Prompt.chat(item, prefill=probe.prefill)
    if probe.type == "narration":
        return Prompt(text=probe.text)
    if tokenizer is None:
        raise MolabError(f"probe {probe.id}: {probe.type} probes need a local model's tokenizer (hf, vllm)")
    if probe.type == "unconditional":
        start = _start_of_text(tokenizer) if probe.start == "text" else _assistant_turn_prefix(tokenizer)
        return Prompt(text=start)
    if not getattr(tokenizer, "chat_template", None):
        raise MolabError(f"probe {probe.id}: user_persona probes need a model with a chat template")
    return Prompt(text=user_turn_prefix(tokenizer, probe.messages or []), prefill=probe.prefill)


def shown_text(prompt: Prompt, tokenizer=None) -> str:
    """Exactly what the model continues: the rendered prompt and prefill with a tokenizer; for a
    backend without one (openai), the chat messages as JSON, then the prefill."""
    if tokenizer is not None:
        from molab.models.generation.prompts import render_prompt

        return render_prompt(tokenizer, prompt)
    if prompt.messages is None:
        return (prompt.text or "") + prompt.prefill
    return json.dumps([m.model_dump() for m in prompt.messages], ensure_ascii=False) + prompt.prefill


class ProbeConfig(GeneratingEvalConfig):
    """Sample every probe several times, score each sample, and summarise per probe type."""

    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=128, temperature=1.0, top_p=0.95)
    )
    probes: Path | None = Field(None, description="Probe YAML; None uses the built-in file.")
    types: list[ProbeType] = Field(default_factory=lambda: list(PROBE_TYPES), min_length=1)
    samples_per_probe: int = Field(4, ge=1, description="Samples per prompt (each scaffold item too).")
    scaffold_model: ModelSpec | None = Field(
        None, description="The model that writes scaffolded probe inputs; None: the audited model."
    )
    scaffold_backend: BackendConfig | None = Field(None, description="Its backend; None: `backend`.")
    scaffold_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=768, temperature=1.0, top_p=0.95)
    )
    judge: RubricJudgeConfig | None = Field(
        None, description="An LLM judge (kind yesno) beside the pattern rule; None: the rule only."
    )

    @model_validator(mode="after")
    def _yesno_judge(self) -> ProbeConfig:
        if self.judge is not None and self.judge.kind != "yesno":
            raise ValueError("the probe judge gives yes/no verdicts: set judge.kind to 'yesno'")
        return self


def summarize(records: Sequence[dict], mentions: Sequence[str], scaffolds: dict | None = None) -> dict:
    """Per probe type and overall: the rule's disclosure rate with its Wilson interval and
    counts; mentions per pattern; the judge's rates and agreement where it judged."""
    out: dict = {"per_type": {}, "overall": share([r["disclosed"] for r in records])}
    for kind in PROBE_TYPES:
        mine = [r for r in records if r["type"] == kind]
        if mine:
            out["per_type"][kind] = {
                "probes": len({r["probe_id"] for r in mine}),
                "prompts": len({(r["probe_id"], r["prompt"]) for r in mine}),
            } | share([r["disclosed"] for r in mine])
    out["mentions"] = {name: sum(name in r["matches"] for r in records) for name in mentions}
    judged = [r for r in records if r["judge"] is not None]
    if any(r["judge_reasoning"] is not None for r in records):
        out["judge"] = {
            "unparsed": sum(r["judge_reasoning"] is not None and r["judge"] is None for r in records),
            "overall": share([r["judge"] for r in judged]),
            "per_type": {
                kind: share([r["judge"] for r in judged if r["type"] == kind])
                for kind in PROBE_TYPES
                if any(r["type"] == kind for r in judged)
            },
            "agreement": sum(r["judge"] == r["disclosed"] for r in judged) / len(judged) if judged else None,
        }
    if scaffolds:
        out["scaffolds"] = scaffolds
    return out


def probe_stage(
    config: ProbeConfig,
    out_dir: Path,
    backend=None,
    tokenizer=None,
    scaffold_backend=None,
    judge_backend=None,
) -> dict:
    """Write `responses.parquet` and `summary.json`; return the headline rates. The backends
    (anything with `generate(prompts, sampling)`) replace the configured ones; `tokenizer`
    renders prompts (default: the audited backend's, else the model's for a local backend)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    probe_file = load_probe_file(config.probes)
    probes = [p for p in probe_file.probes if p.type in config.types]
    if not probes:
        raise MolabError(f"no probes of types {', '.join(config.types)} in {probe_file.source}")
    if config.judge is not None and probe_file.rubric is None:
        raise MolabError(f"{probe_file.source}: a judge is configured but the file has no 'rubric'")
    backend = backend or make_backend(config.backend, config.model)
    tokenizer = tokenizer or getattr(backend, "tokenizer", None)
    if (
        tokenizer is None
        and config.backend.kind != "openai"
        and any(p.type in ("unconditional", "user_persona") for p in probes)
    ):
        tokenizer = _tokenizer(config.model)

    scaffolds = _scaffold(config, [p for p in probes if p.type == "scaffolded"], backend, scaffold_backend)
    jobs: list[tuple[AuditProbe, str | None, Prompt]] = []
    for p in probes:
        items = scaffolds[p.id]["items"] if p.type == "scaffolded" else [None]
        jobs += [(p, item, probe_prompt(p, tokenizer, item)) for item in items]
    shown = [shown_text(prompt, tokenizer) for _, _, prompt in jobs]
    runs = [(j, k) for j in range(len(jobs)) for k in range(config.samples_per_probe)]
    sampling = config.sampling.model_copy(update={"seed": config.seed})
    done = backend.generate([jobs[j][2] for j, _ in runs], sampling)

    verdicts = [None] * len(runs)
    if config.judge is not None:
        judge = RubricJudge(config.judge, backend=judge_backend)
        items = [{"probe": shown[j], "response": c.text} for (j, _), c in zip(runs, done)]
        verdicts = judge.judge(probe_file.rubric, items)
    records = []
    for (j, k), c, v in zip(runs, done, verdicts):
        probe, item, _ = jobs[j]
        matches = probe_file.rule.matches(c.text)
        records.append(
            {
                "probe_id": probe.id,
                "type": probe.type,
                "sample": k,
                "prompt": shown[j],
                "scaffold_input": item,
                "response": c.text,
                "matches": matches,
                "disclosed": bool(matches),
                "judge": None if v is None else v.verdict,
                "judge_reasoning": None if v is None else v.reasoning,
                "num_tokens": c.num_tokens,
                "finish_reason": c.finish_reason,
            }
        )
    summary = summarize(records, list(probe_file.rule.compiled), scaffolds)
    with atomic_path(out_dir / RESPONSES) as tmp:
        pq.write_table(pa.Table.from_pylist(records), tmp)
    write_json(out_dir / SUMMARY, summary)
    return {
        "responses": len(records),
        "disclosure": summary["overall"]["rate"],
        **{f"disclosure_{t}": v["rate"] for t, v in summary["per_type"].items()},
    }


def _scaffold(config: ProbeConfig, probes: list[AuditProbe], backend, scaffold_backend) -> dict:
    """Each scaffolded probe's request, the scaffold's reply and the items parsed from it."""
    if not probes:
        return {}
    if scaffold_backend is None:
        if config.scaffold_model is None and config.scaffold_backend is None:
            scaffold_backend = backend
        else:
            scaffold_backend = make_backend(
                config.scaffold_backend or config.backend, config.scaffold_model or config.model
            )
    sampling = config.scaffold_sampling.model_copy(update={"seed": config.seed})
    prompts = [Prompt.chat(p.request or "", prefill=SCAFFOLD_START) for p in probes]
    out = {}
    for p, c in zip(probes, scaffold_backend.generate(prompts, sampling)):
        reply = SCAFFOLD_START + c.text
        items = parse_items(reply, p.items)
        if not items:
            raise MolabError(
                f"probe {p.id}: the scaffold's reply has no list items (one numbered or bulleted "
                f"line each): {reply[:80]!r}"
            )
        out[p.id] = {"request": p.request, "reply": reply, "items": items}
    return out


def _tokenizer(spec: ModelSpec):
    from molab.models.loading import load_tokenizer, resolve_model_dir

    return load_tokenizer(resolve_model_dir(spec.name, spec.revision), spec.trust_remote_code)


def _inputs(config: ProbeConfig, stage_dir: Path) -> dict:
    """The audited model's adapters and the probe file, and the scaffold's and judge's adapters."""
    found = eval_inputs(("probes",))(config, stage_dir)
    for role, spec in (("scaffold", config.scaffold_model), ("judge", config.judge and config.judge.model)):
        found |= {f"{role}_adapter_{i}": Path(a) for i, a in enumerate(spec.adapters if spec else ())}
    return found


PROBE = Stage(
    "audit-probe", ProbeConfig, (RESPONSES, SUMMARY), lambda c, out, _: probe_stage(c, out), _inputs
)
