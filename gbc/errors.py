"""The base of every error the project raises on purpose.

``GbcError`` marks an error that describes the input, the environment or a backend rather than
a bug; the ``gbc`` command prints it as one ``Error: ...`` line. Each subclass also keeps the
built-in base it had (``ValueError``, ``RuntimeError``, ``TimeoutError``...), so existing
``except ValueError`` code keeps working. This module imports nothing, so every layer may use it.
"""


class GbcError(Exception):
    """An expected failure: bad input, a damaged file, a backend that cannot serve."""


__all__ = ["GbcError"]
