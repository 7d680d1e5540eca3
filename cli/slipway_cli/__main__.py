"""`python -m slipway_cli`, the same as the `slipway` script."""

from slipway_cli.main import app

app(prog_name="slipway")
