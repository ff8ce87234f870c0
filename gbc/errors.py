"""The base of every error the project raises on purpose.

``GbcError`` marks an error that describes the input, the environment or a backend rather than
a bug; the ``gbc`` command prints it as one ``Error: ...`` line. Each subclass also keeps the
built-in base it had (``ValueError``, ``RuntimeError``, ``TimeoutError``...), so existing
``except ValueError`` code keeps working. This module imports nothing, so every layer may use it.
"""


class GbcError(Exception):
    """An expected failure: bad input, a damaged file, a backend that cannot serve."""


def describe_validation_error(exc: BaseException, *, subject: str = "record",
                              unknown: str = "{where}: unknown field", limit: int = 0) -> str:
    """A pydantic ``ValidationError`` (or any exception) as one line: ``where: message; ...``.

    ``subject`` names a problem with no location; ``unknown`` is the text for a forbidden extra
    key (``{where}`` is replaced by its dotted name); ``limit`` > 0 keeps the first ``limit``
    problems and counts the rest.
    """
    errors = getattr(exc, "errors", None)
    items = None
    if callable(errors):
        try:
            items = errors()
        except Exception:  # not a pydantic error after all: use its text
            items = None
    if not items:
        return " ".join(str(exc).split()) or type(exc).__name__
    shown = items[:limit] if limit > 0 else items
    parts = []
    for err in shown:
        where = ".".join(str(p) for p in err.get("loc", ())) or subject
        if err.get("type") == "extra_forbidden":
            parts.append(unknown.format(where=where))
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = f" (and {len(items) - len(shown)} more error(s))" if len(items) > len(shown) else ""
    return "; ".join(parts) + more


__all__ = ["GbcError", "describe_validation_error"]
