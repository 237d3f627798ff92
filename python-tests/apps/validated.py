"""The PEP 3333 test app wrapped in wsgiref.validate.validator.

Any rule the server breaks raises AssertionError inside the app (a 500 plus a
traceback in the server log) or prints a warning/"garbage collected without being
closed" to stderr; test_validator.py asserts none of that happens.
"""

import warnings
from wsgiref.validate import validator, WSGIWarning

from apps.wsgi_rules import application as _inner

# A validator warning is a failed rule too: make it an exception, so it shows as a 500.
warnings.simplefilter("error", WSGIWarning)

application = validator(_inner)
