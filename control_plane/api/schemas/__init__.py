"""Public JSON schemas of the REST API (docs/api.md), one module per resource.

Answers (`...Out`) are read from domain values by pydantic itself (`base.Out`: `model_validate(value)` reads
each field from the attribute of the same name); a schema lists a conversion only where a field's name or type
really differs from the domain value's. Request bodies (`...In`) bound every input. Nothing here calls a service.
"""
