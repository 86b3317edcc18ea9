"""The ``rmwatch`` command line: the top layer, the only one that configures logging or output."""
