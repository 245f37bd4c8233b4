"""The server: msgpack-RPC listener, the contract's methods and statistics, validation, auth,
telemetry, logs."""
