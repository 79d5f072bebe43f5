"""rostersync: keeps a district's classroom roster in step with its SIS."""

__version__ = "0.1.0"
