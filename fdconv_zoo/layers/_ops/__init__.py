"""Fast paths of the FD layers, each tested equal to ``layers/fd_reference.py``; never imported by it."""
