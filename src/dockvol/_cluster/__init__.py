"""Cluster coordination through etcd: the client, key layout, node lease and access modes."""
