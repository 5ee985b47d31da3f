"""Adapters: the only code that touches the database, files, the broker, subprocesses and SDKs."""
