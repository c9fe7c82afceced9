"""The volume service: the protocol's rules, independent of HTTP and of storage."""
