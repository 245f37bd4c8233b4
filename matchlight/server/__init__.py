"""The server: msgpack-RPC listener, the contract's methods, validation, auth, telemetry, logs."""
