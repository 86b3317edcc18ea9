"""rmwatch's replica: a cache of PD resource-manager metadata that is provably in sync with etcd."""
