"""The HTML report a researcher opens after a run (`molab report RUN_DIR`): exploitation of
train and test biases per checkpoint, per-bias heatmap, the other evaluations, transcripts
with the detected behaviour highlighted, training curves, data statistics, configuration,
timings and versions. `collect` reads the run directory, `plots` draws, `page` renders."""

from molab.report.page import Section, render, write_report

__all__ = ["Section", "render", "write_report"]
