"""doctor's checks, one module per area. Each check returns a `Check`; none raises."""
