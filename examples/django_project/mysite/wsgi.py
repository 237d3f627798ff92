"""WSGI entry point: `rwsgi mysite.wsgi:application` (from examples/django_project)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
