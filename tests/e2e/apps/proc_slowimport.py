"""An app whose import takes PROC_IMPORT_SECONDS (a slow start that exceeds start-up time)."""

import os
import time

time.sleep(float(os.environ.get("PROC_IMPORT_SECONDS", "30")))


async def app(scope, receive, send):
    raise RuntimeError("never reached")
