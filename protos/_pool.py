"""The private descriptor pool that infergate's generated protobuf modules register into.

Why not protobuf's default pool: tritonclient ships its own generated ``grpc_service.proto`` and
``model_config.proto``, which define the same ``inference.*`` symbols (our wire contract is Triton's layout)
in the process-wide default pool. A pool refuses a second file that defines a symbol it already has, so a
process that imports both (the tests: the gateway in-process, ``tritonclient.grpc`` as its client) fails at
the second import with ``TypeError: Couldn't build proto file into descriptor pool: duplicate symbol
'inference.DataType'``, whichever is imported first.

So ``protos/generate.py`` rewrites ``_descriptor_pool.Default()`` in the generated ``*_pb2.py`` modules to
:data:`POOL`. Message classes, (de)serialization and the gRPC stubs and servicers do not care which pool a
descriptor lives in. Code that looks descriptors up *by name* must be handed :data:`POOL`: server reflection
(``reflection.enable_server_reflection(names, server, pool=POOL)``), ``json_format`` with ``Any``, and
``symbol_database.Default()`` will not find our types. Reflection resolves every service it lists through
that one pool, so the health and reflection services' files must be added to it too: :func:`add_files`.
"""

from google.protobuf import descriptor, descriptor_pool

__all__ = ["POOL", "add_files"]

POOL: descriptor_pool.DescriptorPool = descriptor_pool.DescriptorPool()


def add_files(*files: descriptor.FileDescriptor) -> None:
    """Add other modules' file descriptors (and, first, their dependencies) to :data:`POOL`.

    For example ``add_files(health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR)`` before enabling server
    reflection with ``pool=POOL``. Files already in the pool are skipped, so calling it again is harmless.
    """
    for file in files:
        try:
            POOL.FindFileByName(file.name)
        except KeyError:
            add_files(*file.dependencies)
            POOL.AddSerializedFile(file.serialized_pb)
