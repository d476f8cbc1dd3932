"""Errors raised for configuration mistakes, with messages that name the problem."""


class TintingConfigError(ValueError):
    """A model pool, task pool or method option that Model Tinting cannot work with."""
