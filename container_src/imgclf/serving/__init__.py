"""Serving: the model server's handler service and the `serve` supervisor."""
