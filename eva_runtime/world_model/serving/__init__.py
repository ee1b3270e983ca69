"""Serving a world model over websockets: the message schema, the server (`eva serve world-model`) and the client.

The client, :class:`~eva_runtime.world_model.serving.client.RemoteWorldModel`, is itself a WorldModel, so the
planner uses a model on a GPU host exactly as it uses a local one. Import the submodules directly; this package
imports nothing so that `messages` stays usable without websockets loaded.
"""
