"""Networks built from sepconv's slim layers (public through :mod:`sepconv.models`)."""
