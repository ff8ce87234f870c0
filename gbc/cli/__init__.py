"""The ``gbc`` command. One module per command group; ``main.cli`` loads them lazily."""
