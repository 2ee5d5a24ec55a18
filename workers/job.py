"""The search driver as a process of its own: what a dispatcher launches for one search.

``python -m workers.job SEARCH_ID`` runs (or resumes, from its last checkpoint) a search whose
row the API created. Locally the dispatcher starts it as a child process with a local Ray; on
a cluster it is the entrypoint of a Ray Job and joins the cluster's Ray (``RAY_ADDRESS``).
The dispatcher passes the lease it claimed (``--worker``, ``--attempt``): every write of the
driver is fenced by it, and once another dispatcher has taken the search over the driver stops
without another write (``storage.fencing``).

A cancel (status ``cancelling``) stops it at the next step boundary. SIGTERM (the dispatcher
shutting down, or dying) stops it too but leaves the search active, for a dispatcher to
resume. Exit status: 0 when the search ended (succeeded or cancelled), 1 when it failed,
3 when it was interrupted or lost its lease.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from errors import SegnasError
from searchspec.spec import SearchSpec
from storage.leases import Fence, LeaseLostError, SearchLeases
from storage.searches import ACTIVE_STATUSES
from workers.driver import SearchCancelledError, SearchDriver
from workers.entry import default_checkpoint_dir, open_store

log = logging.getLogger("segnas.job")

EXIT_ENDED, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 3


def run_job(search_id: str, *, db_url: str | None = None, fence: Fence | None = None) -> int:
    """Run the search ``search_id`` to its end, under the lease ``fence`` (None: unfenced, as
    ``segnas search --resume`` runs); returns the exit status."""
    store = open_store(db_url)
    try:
        record = store.get(search_id)
        if record.status not in ACTIVE_STATUSES:
            log.info("search %s is %s: nothing to run", search_id, record.status)
            return EXIT_ENDED
        leases = SearchLeases(store)
        driver = SearchDriver(
            SearchSpec.model_validate(record.spec),
            store=store,
            checkpoint_dir=default_checkpoint_dir(),
            should_stop=lambda: leases.is_cancelling(search_id),
            interrupted_status=None,
            fence=fence,
        )
        outcome = driver.run(search_id)
        log.info("search %s succeeded: best %s", search_id, outcome.best_arch)
        return EXIT_ENDED
    except SearchCancelledError:
        log.info("search %s cancelled", search_id)
        return EXIT_ENDED
    except LeaseLostError as e:
        log.warning("%s: stopping without another write", e)
        return EXIT_INTERRUPTED
    except (KeyboardInterrupt, SystemExit):
        log.info("search %s interrupted; it stays active for a dispatcher to resume", search_id)
        return EXIT_INTERRUPTED
    except SegnasError as e:
        log.error("search %s failed: %s", search_id, e)
        return EXIT_FAILED
    except Exception:
        log.exception("search %s failed", search_id)
        return EXIT_FAILED
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.job", description=__doc__)
    parser.add_argument("search_id")
    parser.add_argument("--worker", help="the dispatcher whose lease this driver runs under")
    parser.add_argument("--attempt", type=int, help="the attempt number of that lease")
    args = parser.parse_args(argv)
    if (args.worker is None) != (args.attempt is None):
        parser.error("--worker and --attempt go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    fence = None if args.worker is None else Fence(args.worker, args.attempt)
    return run_job(args.search_id, fence=fence)


if __name__ == "__main__":
    sys.exit(main())
