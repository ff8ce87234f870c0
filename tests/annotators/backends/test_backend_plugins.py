"""Third-party backends arrive through the ``gbc.backends`` entry-point group."""

import sys
import textwrap

import pytest

from gbc.annotators.backends import registry
from gbc.annotators.backends.base import BackendError

PLUGIN = textwrap.dedent('''
    from gbc.annotators.backends.base import BackendOptions
    from gbc.annotators.backends.registry import register_mllm

    @register_mllm
    class EchoMllm:
        name = "echo-plugin"

        class Options(BackendOptions):
            prefix: str = ">"

        def __init__(self, argument, options):
            self.argument, self.options = argument, options

        def generate(self, requests):
            return [f"{self.options.prefix}{self.argument}" for _ in requests]
''')


def _install_distribution(root, name, entry_points_txt, modules):
    """A minimal installed distribution (a ``.dist-info`` folder) on ``root``."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points_txt)
    for module, text in modules.items():
        (root / f"{module}.py").write_text(text)


@pytest.fixture
def fresh_registry(monkeypatch, tmp_path):
    registry.registered_backends()  # the built-ins are in the tables before they are copied
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_MLLMS", dict(registry._MLLMS))
    monkeypatch.setattr(registry, "_DETECTORS", dict(registry._DETECTORS))
    monkeypatch.setattr(registry, "_plugin_errors", {})
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("gbc_echo_plugin", "gbc_broken_plugin"):
        sys.modules.pop(name, None)


def test_an_entry_point_backend_is_created_by_spec(fresh_registry):
    with pytest.raises(BackendError, match="unknown MLLM backend 'echo-plugin'"):
        registry.create_mllm("echo-plugin:hello")  # not installed yet
    registry._loaded = False
    _install_distribution(fresh_registry, "gbc_echo_plugin",
                          "[gbc.backends]\necho = gbc_echo_plugin\n", {"gbc_echo_plugin": PLUGIN})
    backend = registry.create_mllm("echo-plugin:hello", {"prefix": "#"})
    assert backend.generate([object(), object()]) == ["#hello", "#hello"]
    assert "echo-plugin" in registry.registered_backends()["mllm"]


def test_a_broken_plugin_is_named_and_does_not_hide_the_builtins(fresh_registry):
    _install_distribution(fresh_registry, "gbc_broken_plugin",
                          "[gbc.backends]\nbroken = gbc_broken_plugin\n",
                          {"gbc_broken_plugin": "raise ImportError('needs libfoo')\n"})
    assert registry.create_mllm("scripted").name == "scripted"
    with pytest.raises(BackendError, match=r"plugin 'broken' failed to load .*needs libfoo"):
        registry.create_mllm("nowhere:x")
