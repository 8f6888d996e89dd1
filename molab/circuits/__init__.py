"""Circuit tracing: per-layer transcoders, attribution graphs on the local replacement model,
their files and viewer, and interventions on features (`molab circuits ...`)."""
