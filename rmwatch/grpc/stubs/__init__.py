"""Client stubs for rmwatch's gRPC services, generated from ``store/proto`` by scripts/gen_proto.

The servers register their handlers by name (``rmwatch.grpc.calls``); these stubs are for
clients (tests, benchmarks, applications): ``ResourceManagerStub`` and ``MetaStorageStub``, with
kvproto's service and method names, so they are interchangeable with stubs generated from
kvproto's own files. The message classes live in ``rmwatch.store._pb``.
"""
