"""``gbc backends``: registered backends, spec syntax and options with defaults."""

import json
import subprocess
import sys

from click.testing import CliRunner

from gbc.cli.main import cli


def test_json_lists_every_builtin_backend_with_options():
    result = CliRunner().invoke(cli, ["backends", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    mllms = {row["name"]: row for row in data["mllm"]}
    detectors = {row["name"]: row for row in data["detector"]}
    assert {"transformers", "openai"} <= set(mllms) and {"grounding-dino", "owlv2"} <= set(detectors)
    assert mllms["openai"]["spec"] == "openai:<base url>[#model]"
    options = {o["name"]: o for o in mllms["transformers"]["options"]}
    assert options["max_batch_size"]["default"] == 8 and options["max_batch_size"]["type"] == "int"
    assert options["trust_remote_code"]["default"] is False
    assert options["device"]["description"].startswith("auto")
    assert {o["name"]: o["default"] for o in mllms["openai"]["options"]}["api_key_env"] == "OPENAI_API_KEY"
    assert {o["name"]: o["default"] for o in detectors["grounding-dino"]["options"]}["threshold"] == 0.2


def test_text_listing_and_kind_filter():
    result = CliRunner().invoke(cli, ["backends", "--kind", "detector"])
    assert result.exit_code == 0
    assert "grounding-dino:<hub id or local folder>" in result.output
    assert "max_queries_per_pass=32" in result.output
    assert "transformers:" not in result.output
    bad = CliRunner().invoke(cli, ["backends", "--kind", "nope"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_listing_does_not_import_torch_or_transformers():
    code = (
        "import sys; from click.testing import CliRunner; from gbc.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['backends']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'transformers', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
