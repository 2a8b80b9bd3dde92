"""``binventory serve``."""


def add_parsers(commands, formatter) -> None:
    pass
