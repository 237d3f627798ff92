"""A single-file Django project: one view rendering a template with a loop.

Settings are configured in code so the bench needs no project folder; the template
sits in templates/ next to this file.
"""

import gc
import os

from django.conf import settings

HERE = os.path.dirname(os.path.abspath(__file__))

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
        ],
        INSTALLED_APPS=[],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [os.path.join(HERE, "templates")],
            }
        ],
        USE_TZ=True,
    )

import django  # noqa: E402

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.shortcuts import render  # noqa: E402
from django.urls import path  # noqa: E402

ITEMS = [{"name": f"item {i}", "price": i * 1.5} for i in range(10)]


def pid(request):
    # Which worker answered: bench/run.sh coldstart polls it until every worker has.
    return HttpResponse(str(os.getpid()), content_type="text/plain")


def collect(request):
    # A full collection, as a long-lived worker runs them now and then: bench/run.sh
    # coldstart reads the servers' memory again after every worker ran one (a forked
    # worker then copies the pages of the objects the collection writes to).
    gc.collect()
    return HttpResponse(str(os.getpid()), content_type="text/plain")


def index(request):
    return render(request, "index.html", {"title": "rwsgi bench", "items": ITEMS})


urlpatterns = [path("", index), path("pid", pid), path("gc", collect)]

application = get_wsgi_application()
app = application
