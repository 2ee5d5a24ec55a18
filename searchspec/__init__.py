"""The search spec and what it costs, below everything that reads it.

``searchspec.spec`` is the model of a search (what ``configs/*.yaml``, ``POST /searches`` and
``segnas search --set`` all describe); ``searchspec.cost`` estimates a spec's parameters,
memory and work without torch; ``searchspec.budget`` holds the estimate to an operator's
limits. ``workers``, ``service``, ``reports`` and the command line import it; it imports none
of them (only ``supernet``'s torch-free spaces and data-set specs, and ``controller.config``).
"""
