# The gunicorn config prometheus_client's documentation gives for multiprocess mode.
from prometheus_client import multiprocess


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
