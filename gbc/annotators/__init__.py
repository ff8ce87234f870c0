"""Everything that makes graphs: backends, prompts, parsers, detection post-processing and the engine."""
