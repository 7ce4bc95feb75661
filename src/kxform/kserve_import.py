"""kserve, imported without reading kxform's command line.

kserve 0.21's ``kserve.model_server`` parses ``sys.argv`` with kserve's own argument parser when it is
imported (its module-level ``args``): ``kxform serve --workers auto`` or a bare ``--enable_grpc`` would
exit there with kserve's usage error. The command line calls ``load()`` before anything imports kserve,
so kserve sees only the program name and keeps its defaults (kxform passes every value explicitly).

kserve 0.21's REST app answers with FastAPI's ``ORJSONResponse``, which FastAPI now deprecates: every request
served by ``--server kserve`` printed a ``FastAPIDeprecationWarning`` to the log. The response is still right
and the choice is kserve's, so that one warning is silenced here, where kserve is loaded.
"""

from __future__ import annotations

import sys
import warnings

__all__ = ["load"]


def load() -> None:
    """Import kserve once with an empty command line; later imports find it in ``sys.modules``."""
    warnings.filterwarnings("ignore", message=r"ORJSONResponse is deprecated")
    if "kserve" in sys.modules:
        return
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve  # noqa: F401  # imported for its side effect: kserve parses sys.argv now, not later
    finally:
        sys.argv = argv
