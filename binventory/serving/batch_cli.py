"""``binventory export`` and ``binventory predict``."""


def add_parsers(commands, formatter) -> None:
    pass
