"""etar's Confluent-compatible Schema Registry, schemas kept in the compacted ``_schemas`` topic.

Run as ``python -m etar.native.registry``; its service definition is
``etar.native.services.registry``.
"""
