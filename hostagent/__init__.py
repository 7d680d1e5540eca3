"""Slipway host agent: a standard-library-only tool run on every Docker host over SSH.

It carries out and reports; the portal decides. It must import nothing outside the
standard library so it runs on any host's python3.
"""

from hostagent.protocol import AGENT_VERSION

__all__ = ["AGENT_VERSION"]
