"""Neural Music Demixing: the application layer (settings, command line, process wiring)."""
