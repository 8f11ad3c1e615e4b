"""infergate's own benchmark suite (``make bench``): not part of the installed distribution."""
