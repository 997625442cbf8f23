"""The engines plugin's Falcon resources, one module per family:

- :mod:`.owner`: the owner's engines (user principal): list, register, delete, reset, rename;
- :mod:`.claims`: the dashboard claim flow (a user approves, the service redeems);
- :mod:`.engine`: the engine's own routes (engine principal): auth info, heartbeat.
"""
