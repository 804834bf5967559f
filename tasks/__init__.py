"""cephboot: doit task generators that turn a YAML inventory into a Ceph-RBD boot tree."""
