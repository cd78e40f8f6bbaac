"""Joining a Ray cluster named on the command line: `local` starts one in this process, `auto` joins the one
in RAY_ADDRESS, anything else is a head's HOST:PORT (or ray://...)."""
from __future__ import annotations

import logging
import os

LOCAL, AUTO = "local", "auto"


class ClusterError(RuntimeError):
    """The cluster named by --ray cannot be joined."""


def connect(address: str) -> None:
    """Join (or for `local` start) the cluster once per process; ClusterError naming the address if it fails."""
    import ray

    if ray.is_initialized():
        return
    if address == AUTO and not os.environ.get("RAY_ADDRESS"):
        raise ClusterError("--ray auto: RAY_ADDRESS is not set; give the head's HOST:PORT, or --ray local")
    try:
        ray.init(address=None if address == LOCAL else address, logging_level="WARNING", log_to_driver=False,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ClusterError(f"--ray {address}: cannot join the Ray cluster ({str(e).splitlines()[0]})") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # plans, timings, notes: in Ray's logs; our bar says enough
