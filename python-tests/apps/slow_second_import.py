"""process_app, but the second worker to import it takes 1.5 s longer to load: the
start-up of a worker pool whose workers do not finish importing the app together."""

import os
import time

from apps.process_app import application  # noqa: F401  (the app: /pid)

_marker = os.environ["RWSGI_TEST_IMPORT_MARKER"]
try:
    os.close(os.open(_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
except FileExistsError:
    time.sleep(1.5)
