"""Matchlight: real-time personalization and recommendation, served over msgpack-RPC.

This package is the composition root: the command line, the msgpack-RPC
server and client, configuration, and the benchmark and demo commands.
"""

from matchlight.client import Client
from matchlight.errors import RpcError

__version__ = "0.1.0"

__all__ = ["Client", "RpcError", "__version__"]
