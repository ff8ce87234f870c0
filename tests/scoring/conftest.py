from score_fixtures import synthetic_set, tiny_clip, tiny_toxicity  # noqa: F401
