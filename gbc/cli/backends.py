"""``gbc backends``: the registered MLLM and detector backends, their spec syntax and options."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import click

from gbc.cli.common import handle_errors

KINDS = {"mllm": "MLLM backends (--mllm)", "detector": "Detector backends (--detector)"}


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "")
    return text.replace("NoneType", "None")


def _default(field) -> Any:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return field.default_factory()
    return None if field.default is PydanticUndefined else field.default


def _summary(cls) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def describe_backends(kind: Optional[str] = None) -> Dict[str, List[Dict[str, Any]]]:
    """``{"mllm": [...], "detector": [...]}``: name, spec syntax, summary and options of each backend."""
    from gbc.annotators.backends.registry import registered_backends

    described: Dict[str, List[Dict[str, Any]]] = {}
    for group, table in registered_backends().items():
        if kind and group != kind:
            continue
        rows = []
        for name in sorted(table):
            cls = table[name]
            options = []
            for option, field in getattr(cls, "Options").model_fields.items():
                options.append({
                    "name": option,
                    "type": _type_name(field.annotation),
                    "default": _default(field),
                    "description": field.description or "",
                })
            rows.append({
                "name": name,
                "spec": getattr(cls, "spec_syntax", f"{name}:<argument>"),
                "summary": _summary(cls),
                "options": options,
            })
        described[group] = rows
    return described


@click.command()
@click.option("--kind", type=click.Choice(sorted(KINDS)), default=None, help="Only MLLM or only detector backends.")
@click.option("--json", "as_json", is_flag=True, help="Print {mllm: [...], detector: [...]} as JSON.")
@handle_errors
def backends(kind: Optional[str], as_json: bool):
    """List the registered model backends, their spec syntax and their options.

    Pass options to a backend with --mllm-option KEY=VALUE / --detector-option KEY=VALUE
    (gbc annotate); unknown options are errors.
    """
    described = describe_backends(kind)
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    for group, rows in described.items():
        click.echo(KINDS[group])
        for row in rows:
            click.echo(f"  {row['spec']}")
            if row["summary"]:
                click.echo(f"      {row['summary']}")
            for opt in row["options"]:
                default = json.dumps(opt["default"], default=str)
                line = f"      {opt['name']}={default}  ({opt['type']})"
                click.echo(line + (f"  {opt['description']}" if opt["description"] else ""))
        click.echo("")

