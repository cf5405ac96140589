"""Small helpers shared by the RTL blocks."""

import functools

__all__ = ["checked_init"]


def checked_init(init):
    """Decorate a Component's ``__init__`` that validates its parameters.

    An instance whose constructor raised was never meant to be elaborated:
    silence Amaranth's UnusedElaboratable warning for it, which would
    otherwise fire at garbage-collection time (inside whatever test runs
    then, where warnings are errors).
    """
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            return init(self, *args, **kwargs)
        except Exception:
            self._MustUse__silence = True
            raise
    return wrapper
