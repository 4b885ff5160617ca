"""Private implementation of sepconv. Import from :mod:`sepconv` instead."""
