import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
REFERENCE_DIR = REPO.parent / "shared" / "gbc-reference" / "wiki"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The folder of real GBC graphs and images; tests that use it skip when it is absent."""
    if not (REFERENCE_DIR / "wiki_gbc_graphs.jsonl").exists():
        pytest.skip("../shared/gbc-reference is not available")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference_jsonl(reference_dir) -> Path:
    return reference_dir / "wiki_gbc_graphs.jsonl"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


#: Tests that use these fixtures take seconds each: tiny transformers models built and run on
#: the CPU, a local Ray cluster, a real browser. They are marked ``slow``.
SLOW_FIXTURES = frozenset({
    "tiny_llava", "tiny_llava_next", "tiny_grounding_dino", "tiny_grounding_dino_short", "tiny_owlv2",
    "tiny_clip", "tiny_toxicity", "ray_local", "browser",
})
#: Modules whose tests start, kill or race real processes (SIGKILL resume, store creation races,
#: benchmark scripts run as tests, Ray inputs): ``slow`` as a whole.
SLOW_MODULES = frozenset({
    "test_resume.py", "test_store_creation_race.py", "test_bench_store.py", "test_ray_inputs.py",
    "test_ray_signature.py", "test_browser.py", "test_semantic.py", "test_hf_detectors.py", "test_hf_mllm.py",
    "test_damaged_store.py", "test_disk_full.py", "test_annotate_lock_cli.py", "test_bench_store_check.py",
    # servers that reset, stall or go silent: the tests wait out real (short) timeouts
    "test_engine_openai_faults.py", "test_annotate_openai_faults_cli.py", "test_openai_faults.py",
    # whole annotate/export commands over many inputs, stores of hundreds of graphs
    "test_annotate_inputs_cli.py", "test_undecodable_names_cli.py", "test_mapped_pages.py",
})
#: Single tests that take seconds: whole commands in subprocesses, plots, every export format
#: of the reference graphs, the huge-image memory bound.
SLOW_TESTS = frozenset({
    "test_huge_images_are_bounded_by_the_pixel_budget", "test_stats_table_and_plot",
    "test_a_reader_in_another_process_follows_a_growing_store", "test_reference_export_every_format",
    "test_real_gbc_convert_process", "test_real_gbc_process_on_bad_and_good_input", "test_reference_graphs_render",
    "test_plot_of_reference_graphs", "test_workers_give_the_same_shards", "test_installed_command_runs",
    "test_gbc_annotate_command_gives_the_same_graphs", "test_catalog_beside_the_store_by_default_with_a_stats_plot",
    "test_score_distributions_are_counted_per_label_and_plotted",
    "test_a_ray_run_prints_only_its_own_lines", "test_default_models_missing_without_network_is_said_within_seconds",
    "test_semantic_same_object_merges_synonyms", "test_every_url_ends_as_bytes_or_a_reason",
    "test_cli_commands_say_where_the_file_broke",
})


def pytest_collection_modifyitems(config, items):
    """``slow`` for the tests above (``pytest -m "not slow"`` is the quick loop); GPU tests skip without CUDA."""
    slow = pytest.mark.slow
    for item in items:
        if (item.path.name in SLOW_MODULES or item.originalname in SLOW_TESTS
                or SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))):
            item.add_marker(slow)
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
