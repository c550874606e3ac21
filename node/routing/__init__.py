"""Cortex routing (SPEC-006): which cortex answers a model request, and on which device.

``config`` reads the cortices a node hosts, ``registry`` knows live what every peer hosts,
``frontal_lobe`` picks a kind for ``auto``, ``router`` picks a host with fallback and cooldown,
``backend`` calls ``litellm`` on the hosting node, ``protocol`` carries requests and chunks over
the peer channel, ``feature`` wires it all into the node and ``cli`` adds ``maia cortex`` and
``maia ask``. Nothing here imports ``litellm`` at module level: it loads only when a call needs it.
"""
