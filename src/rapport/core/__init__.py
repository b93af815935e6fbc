"""The pure domain: no storage, HTTP or asyncio imports here.

Every function takes state, input and ``now`` and returns new state (plus
effects); the runtime loads and commits state around these calls.
"""
