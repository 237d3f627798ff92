"""WSGI apps used only by the python-tests (imported by rwsgi as apps.<module>)."""
