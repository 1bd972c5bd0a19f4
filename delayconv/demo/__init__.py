"""The demo: a small spiking network that learns synaptic delays to tell the
direction and speed of drifting dots. Run it with ``python -m delayconv.demo``
(see ``__main__.py``); its parts are importable for tests and notebooks.
"""
