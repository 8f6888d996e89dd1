"""`molab bench circuits`: molab's attribution graphs against circuit-tracer's, in one run
(molab/bench/circuits.py; circuit-tracer lives in a second environment that
scripts/circuit-tracer-env.sh builds).

    scripts/circuit-tracer-env.sh                  # once: .venv-circuit-tracer
    molab bench circuits --out bench-circuits.json
    molab bench circuits --max-feature-nodes 1024 --ct-batch-sizes 64   # a quicker look
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from molab.cli import bench_app
from molab.errors import MolabError


@bench_app.command("circuits")
def bench_circuits(
    model: Annotated[str, typer.Option(help="Model spec.")] = "smollm2-135m",
    prompt: Annotated[str | None, typer.Option(help="Prompt (default: a 16-token one).")] = None,
    width: Annotated[int, typer.Option(help="Features per random transcoder.")] = 9216,
    active: Annotated[float, typer.Option(help="Active features per token (the thresholds' target).")] = 32.0,
    max_feature_nodes: Annotated[int, typer.Option(help="Feature rows of both graphs.")] = 7500,
    ct_batch_sizes: Annotated[
        str, typer.Option(help="circuit-tracer's batch sizes, comma-separated (its CLI default: 256).")
    ] = "64,256",
    molab_batch_size: Annotated[
        int | None, typer.Option(help="molab's batch size (default: its own).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads in both (default: torch's).")] = None,
    ct_python: Annotated[
        Path | None,
        typer.Option(help="The circuit-tracer environment's python (default: .venv-circuit-tracer)."),
    ] = None,
    keep: Annotated[Path | None, typer.Option(help="Keep the transcoders and graphs in this folder.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random transcoders.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
):
    """Graph time and peak memory of circuit-tracer (batch 64 and 256) and molab on the same
    prompt and random transcoders of the real shape; goal: molab >= 5x faster than
    circuit-tracer's fastest, with <= half its peak memory. Without the second environment,
    molab alone."""
    from molab.bench.circuits import BENCH_PROMPT
    from molab.bench.circuits import bench_circuits as run
    from molab.files import check_output_file, write_json

    if out:
        check_output_file(out)
    try:
        batches = tuple(int(b) for b in ct_batch_sizes.split(",") if b.strip())
    except ValueError:
        raise MolabError(f"--ct-batch-sizes {ct_batch_sizes!r}: give comma-separated integers") from None
    if not batches or min(batches) < 1:
        raise MolabError("--ct-batch-sizes: give at least one positive batch size")
    if max_feature_nodes < 1:
        raise MolabError("--max-feature-nodes must be at least 1")
    result = run(
        model,
        prompt=prompt or BENCH_PROMPT,
        width=width,
        active_per_token=active,
        max_feature_nodes=max_feature_nodes,
        ct_batch_sizes=batches,
        molab_batch_size=molab_batch_size,
        threads=threads,
        ct_python=ct_python,
        keep=keep,
        seed=seed,
        log=typer.echo,
    )
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json(out, result)
