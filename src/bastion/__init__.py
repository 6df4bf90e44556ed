"""bastion: one process tree that serves any Python web app in production."""

__version__ = "0.1.0"
