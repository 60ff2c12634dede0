"""The twin's handlers, one module per ARM resource type (as moto's ``responses`` and Azurite's handlers).

Every handler is ``handler(state, call) -> Reply``: it reads and changes the ``FleetState``
and raises ``ArmError`` for ARM's error answers. ``routes.py`` says which handler answers
which (method, path); ``common`` holds the lookups and paging they share.
"""
