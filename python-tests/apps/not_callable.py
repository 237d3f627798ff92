"""An app module whose `application` is not callable, and which has no `missing_attr`."""

application = 42
