"""Run a segnas search on the Ray cluster this script finds: ``ray submit`` / ``ray job submit``.

``ray submit CLUSTER.yaml deploy/ray/submit.py -- --config ~/segnas-src/configs/voc.yaml`` copies
only this file to the head node and runs it there, so it imports segnas from the installed
package (the cluster files in deploy/ray/ install it on every node). Arguments are those of
``segnas search``, or, after a first argument naming one of the verbs that run on Ray
(``retrain``, ``reproduce``), those of that verb:
``ray submit CLUSTER.yaml deploy/ray/submit.py -- reproduce --dataset voc --gpus-per-trial 1``.
The cluster is ``RAY_ADDRESS`` when set (Ray Jobs sets it), else ``auto``: the Ray running on
this node.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

RAY_VERBS = ("search", "retrain", "reproduce")


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("RAY_ADDRESS", "auto")
    from segnas.cli import main as segnas_main

    args = list(sys.argv[1:] if argv is None else argv)
    verb = args.pop(0) if args and args[0] in RAY_VERBS else "search"
    return segnas_main([verb, *args])


if __name__ == "__main__":
    sys.exit(main())
