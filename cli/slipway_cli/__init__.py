"""slipway: a Slipway portal's REST API from a terminal."""

__version__ = "0.1.0"
