"""What the core says to the features above it, without importing them."""

from __future__ import annotations

from django.dispatch import Signal

# The executor replaced a container (a new spec, or a move to another host) after reading its
# last lines. Sent from the operation's own thread, after the new container is recorded.
# Arguments: instance, host (where the old one ran), container_id, frames (("stdout"|"stderr",
# bytes) read with Docker's timestamps, oldest first), error (why none could be read, or "")
# and reason (a sentence).
container_replaced = Signal()
