"""End-to-end tests: real Ceph, real iPXE, a real kernel, all inside a network namespace."""
