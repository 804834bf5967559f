"""cephboot's benchmark: synthetic sites of 10 to 10,000 hosts, timed with real doit runs."""
