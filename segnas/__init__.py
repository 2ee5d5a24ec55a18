"""segnas: ENAS architecture search for semantic segmentation, as a service.

This package holds the command line; the engine lives in ``supernet`` and ``controller``.
"""

__version__ = "0.1.0"
