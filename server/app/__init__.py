"""The composition root: the one place that builds and wires every part.

hub.py starts the parts in order and stops them in reverse; serving.py builds
the gRPC server and the HTTP app from them; database.py opens the store.
"""

from server.app.hub import Hub

__all__ = ["Hub"]
