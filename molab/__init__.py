"""molab: build, measure and audit model organisms of hidden objectives.

Start with `make demo` (builds the default organism on the embedded model) and
`make test`. The pipeline reads in data order: catalog -> data -> train -> evals -> report,
with `molab.models` (loading, generation) and `molab.pipeline` (run directories) underneath.
"""

__version__ = "0.1.0"
