"""process_app, imported slowly: the import sleeps $RWSGI_TEST_IMPORT_SLEEP seconds
(default 5), so a test can act on the master while its workers are still booting."""

import os
import time

from apps.process_app import application  # noqa: F401  (the app: /pid)

time.sleep(float(os.environ.get("RWSGI_TEST_IMPORT_SLEEP", "5")))
