"""Example sweep configs shipped with rungflow, so `rungflow sweep` and the docs can point at them after a pip install."""
