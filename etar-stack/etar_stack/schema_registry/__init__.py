"""etar's Confluent-compatible Schema Registry, schemas kept in the compacted ``_schemas`` topic.

Run as ``python -m etar_stack.schema_registry``; its service definition is
``etar_stack.services.registry``.
"""
