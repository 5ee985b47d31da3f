"""The edge agent: the device daemon that keeps one edge node serving the model versions it is told to."""

__version__ = "0.1.0"
