"""The Python example of docs/runtimes.md, served by gunicorn (app:app): / says which instance
and which Python it runs on, /health answers "ok" for the portal's health check."""

import os
import platform

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> tuple[str, int, dict[str, str]]:
    return (
        f"Hello from {os.environ.get('SLIPWAY_INSTANCE')} on Python {platform.python_version()}\n",
        200,
        {"Content-Type": "text/plain"},
    )


@app.get("/health")
def health() -> tuple[str, int, dict[str, str]]:
    return "ok\n", 200, {"Content-Type": "text/plain"}
